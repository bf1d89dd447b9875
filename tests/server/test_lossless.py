"""Invariant 1 through the whole gateway: a client never hears 250 for a message the downstream
did not accept. Client (smtplib, in a thread) -> mailmoat -> a downstream that misbehaves on
request (tests/relay/relay_support.FakeDownstream), all on loopback in one event loop."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mailmoat import config
from mailmoat.server.gateway import Gateway
from tests.support.fake_downstream import FakeDownstream
from tests.support.ports import free_port
from tests.support.waiting import DEADLINE

MESSAGE = b"From: a@b.test\r\nSubject: t\r\n\r\n.dot line\r\nbody\r\n"


async def _gateway(downstream_port: int, **overrides: Any) -> tuple[Gateway, int]:
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "domains.local": ["example.test"],
            "relay.downstream": f"127.0.0.1:{downstream_port}",
            "relay.connect_timeout": 1.0,
            "relay.command_timeout": 1.0,
            "relay.data_timeout": 1.0,
            "relay.pool_wait": 0.5,
            "dns.checks": False,
            **overrides,
        },
    )
    gw = Gateway(settings)
    bound = await gw.start()
    return gw, bound[0][1]


def _send(port: int, rcpts: list[str], message: bytes = MESSAGE) -> tuple[int, bytes]:
    """Run one transaction; return the end-of-data (or first failing) reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("a@b.test")
        for r in rcpts:
            code, text = c.rcpt(r)
            assert code == 250, text
        return c.data(message)


@pytest.fixture
async def fake() -> AsyncIterator[Callable[..., Any]]:
    made: list[FakeDownstream] = []

    async def make(**kw: Any) -> FakeDownstream:
        d = await FakeDownstream(**kw).start()
        made.append(d)
        return d

    yield make
    for d in made:
        await d.stop()


async def test_accepted_message_arrives_intact_with_one_received_header(fake: Any) -> None:
    down = await fake()
    gw, port = await _gateway(down.port)
    try:
        code, text = await asyncio.to_thread(_send, port, ["alice@example.test"])
    finally:
        await gw.stop()
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as ")
    (got,) = down.messages
    assert got.startswith(b"Received: from client.test ([127.0.0.1])\r\n\tby mx.mailmoat.test")
    assert got.endswith(MESSAGE)
    assert len(got) - len(MESSAGE) == got.index(b"From: a@b.test")
    # the downstream saw mailmoat's own commands, not the client's
    assert any(line.startswith(b"MAIL FROM:<a@b.test> ") for line in down.lines)
    assert b"RCPT TO:<alice@example.test>" in down.lines


async def test_downstream_down_gives_451(fake: Any) -> None:
    gw, port = await _gateway(free_port())
    try:
        code, text = await asyncio.to_thread(_send, port, ["alice@example.test"])
    finally:
        await gw.stop()
    assert code == 451 and text.startswith(b"4.4.1")


@pytest.mark.parametrize(
    ("answer", "code", "enhanced"),
    [
        (b"550 5.1.1 <bob@example.test>: user unknown\r\n", 550, b"5.1.1"),
        (b"450 4.2.0 <bob@example.test>: mailbox busy\r\n", 450, b"4.2.0"),
    ],
)
async def test_recipient_refused_downstream_refuses_the_message(
    fake: Any, answer: bytes, code: int, enhanced: bytes
) -> None:
    down = await fake(rcpt=lambda a: answer if a.startswith("bob") else b"250 2.1.5 Ok\r\n")
    gw, port = await _gateway(down.port)
    try:
        got = await asyncio.to_thread(_send, port, ["alice@example.test", "bob@example.test"])
    finally:
        await gw.stop()
    assert got[0] == code and got[1].startswith(enhanced)
    assert down.messages == []  # nothing was sent for a partial recipient list


@pytest.mark.parametrize(
    ("end", "code"),
    [(b"554 5.7.1 Message refused: spam\r\n", 554), (b"452 4.3.1 Disk full\r\n", 452)],
)
async def test_end_of_data_refusal_is_passed_on(fake: Any, end: bytes, code: int) -> None:
    down = await fake(end=lambda accepted: end)
    gw, port = await _gateway(down.port)
    try:
        got = await asyncio.to_thread(_send, port, ["alice@example.test"])
    finally:
        await gw.stop()
    assert got[0] == code


@pytest.mark.parametrize("behaviour", ["close", "silent"])
async def test_downstream_vanishing_or_silent_in_data_gives_451(fake: Any, behaviour: str) -> None:
    down = await fake(on_data=behaviour)
    gw, port = await _gateway(down.port)
    try:
        got = await asyncio.to_thread(_send, port, ["alice@example.test"], MESSAGE * 20)
    finally:
        await gw.stop()
    assert got[0] == 451 and got[1].startswith(b"4.4.2")


async def test_pool_exhausted_gives_451_and_downstream_never_sees_more(fake: Any) -> None:
    down = await fake(command_delay=1.5)
    gw, port = await _gateway(
        down.port, **{"relay.pool_size": 2, "relay.pool_wait": 0.2, "relay.command_timeout": 5}
    )
    try:
        results = await asyncio.gather(
            *(asyncio.to_thread(_send, port, ["alice@example.test"]) for _ in range(5))
        )
    finally:
        await gw.stop()
    codes = sorted(code for code, _ in results)
    assert codes.count(250) == 2
    assert codes.count(451) == 3
    assert down.max_concurrent <= 2


async def test_reading_pauses_while_delivery_waits(fake: Any) -> None:
    """A client that keeps pipelining while its message is being relayed cannot make the
    session hold more than the input limit."""
    down = await fake(command_delay=1.0)
    gw, port = await _gateway(down.port, **{"server.input_buffer": 16384})
    loop = asyncio.get_running_loop()
    peak = 0

    def client() -> int:
        s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        s.recv(1024)
        s.sendall(b"EHLO c.test\r\n")
        s.recv(4096)
        s.sendall(b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n")
        got = b""
        while got.count(b"\r\n") < 3:
            got += s.recv(4096)
        s.setblocking(False)
        s.send(MESSAGE + b".\r\n")
        sent = 0
        junk = b"NOOP\r\n" * 10000
        for _ in range(200):  # keep writing without reading, until the kernel buffers are full
            try:
                sent += s.send(junk)
            except BlockingIOError:
                break
        s.close()
        return sent

    try:
        # look at the session's buffer while the client writes, and on until the session is
        # gone (the client may finish before the session has read what the kernel holds)
        writing = loop.run_in_executor(None, client)
        until = loop.time() + DEADLINE
        while (not writing.done() or gw.sessions) and loop.time() < until:
            for session in list(gw.sessions):
                peak = max(peak, session.conn.buffered)
            await asyncio.sleep(0.01)
        sent = await writing
    finally:
        await gw.stop()
    assert 0 < peak <= 16384 + 256 * 1024  # the limit plus at most one read
    assert sent > 4 * peak  # the rest waited in the kernel's buffers, not in mailmoat
