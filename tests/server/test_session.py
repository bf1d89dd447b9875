"""The session: the trace header's date and address literal, replies of a pipelined group."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from ipaddress import ip_address
from pathlib import Path

from mailmoat.policy.base import Check, Client, HookResult
from mailmoat.server import received
from mailmoat.server.gateway import Gateway
from mailmoat.server.received import _address_literal, trace_date
from mailmoat.smtp.events import RcptTo
from tests.support.gateway import gateway_settings


def test_trace_date_is_the_local_time_to_the_second() -> None:
    before = time.time()
    text = trace_date()
    after = time.time()
    when = parsedate_to_datetime(text)
    assert int(before) <= when.timestamp() <= after
    assert text == format_datetime(datetime.fromtimestamp(when.timestamp()).astimezone())
    assert trace_date() in (text, trace_date())  # made once a second, not per call


def test_trace_date_follows_the_clock(monkeypatch) -> None:
    monkeypatch.setattr(received.time, "time", lambda: 1_000_000_000.5)
    first = trace_date()
    monkeypatch.setattr(received.time, "time", lambda: 1_000_000_001.2)
    assert parsedate_to_datetime(trace_date()).timestamp() - 1 == (
        parsedate_to_datetime(first).timestamp()
    )


def test_address_literal() -> None:
    assert _address_literal(ip_address("192.0.2.7")) == "192.0.2.7"
    assert _address_literal(ip_address("2001:db8::1")) == "IPv6:2001:db8::1"


class SlowRcpt(Check):
    """A recipient check that waits (as a directory or DNS lookup would)."""

    async def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        await asyncio.sleep(0.2)
        return None


async def test_a_pipelined_group_is_answered_in_one_write(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "md")
    gw = Gateway(settings, checks=[SlowRcpt()])
    port = (await gw.start())[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readuntil(b"\r\n")
        writer.write(b"EHLO client.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        started = time.monotonic()
        writer.write(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.test>\r\nDATA\r\n")
        # MAIL is answered at once, RCPT only after its check: the three replies still come
        # as one unit, not MAIL's 250 first and the rest 0.2 s later
        first = await asyncio.wait_for(reader.read(4096), 5)
        assert time.monotonic() - started >= 0.2
        assert first == b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n"
        writer.write(b"Subject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n")
        rest = await asyncio.wait_for(reader.read(4096), 5)
        assert rest.startswith(b"250 2.0.0 Ok")
        writer.close()
    finally:
        await gw.stop(grace=1)


class BrokenRcpt(Check):
    async def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        await asyncio.sleep(0)
        raise RuntimeError("a bug")


async def test_a_failing_hook_gives_451_after_the_replies_before_it(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "md")
    gw = Gateway(settings, checks=[BrokenRcpt()])
    port = (await gw.start())[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reader.readuntil(b"\r\n")
        writer.write(b"EHLO client.test\r\n")
        while not (await reader.readline()).startswith(b"250 "):
            pass
        writer.write(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.test>\r\n")
        got = await asyncio.wait_for(reader.read(), 5)  # until the server closes
        assert (
            got
            == b"250 2.1.0 Ok\r\n451 4.3.0 Error: local error in processing, try again later\r\n"
        )
        writer.close()
    finally:
        await gw.stop(grace=1)


def test_a_session_is_slotted() -> None:
    """Tens of thousands of sessions are held at once: each is a slotted object, with no
    per-instance dict (every part of SmtpSession declares __slots__)."""
    from mailmoat.server.session import SmtpSession

    assert not hasattr(SmtpSession.__new__(SmtpSession), "__dict__")
