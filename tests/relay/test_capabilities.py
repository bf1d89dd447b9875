"""SMTPUTF8, 8BITMIME and SIZE are offered to clients only as far as delivery can honour them,
and a MAIL that needs what the downstream lacks is refused at MAIL, never with a 5xx after DATA
(relay/capabilities.py). Through the whole gateway, with the scripted FakeDownstream."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.relay.capabilities import HEADER_ROOM
from mailmoat.server.gateway import Gateway
from tests.support.fake_downstream import FakeDownstream
from tests.support.ports import free_port

PLAIN = b"Subject: plain\r\n\r\nhello\r\n"


async def _gateway(tmp_path: Path, port: int | None, **overrides: Any) -> Gateway:
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "Maildir"),
            "relay.connect_timeout": 1.0,
            "relay.command_timeout": 1.0,
            "relay.data_timeout": 1.0,
            "relay.pool_wait": 1.0,
            "dns.checks": False,
            **({"relay.downstream": f"127.0.0.1:{port}"} if port else {}),
            **overrides,
        },
    )
    gw = Gateway(settings)
    await gw.start()
    return gw


def _port(gw: Gateway) -> int:
    return int(gw.servers[0].sockets[0].getsockname()[1])


async def _learned(gw: Gateway) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while gw.delivery.capabilities is None and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert gw.delivery.capabilities is not None


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


def _talk(port: int, steps: Callable[[smtplib.SMTP], Any]) -> Any:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.ehlo("client.test")
        return steps(c)


@pytest.mark.parametrize("lmtp", [False, True], ids=["smtp", "lmtp"])
async def test_what_the_downstream_lacks_is_not_offered(
    tmp_path: Path, fake: Any, lmtp: bool
) -> None:
    down = await fake(lmtp=lmtp, extensions=("PIPELINING", "SIZE 50000"))
    gw = await _gateway(tmp_path, down.port, **{"relay.protocol": "lmtp" if lmtp else "smtp"})
    try:
        await _learned(gw)

        def steps(c: smtplib.SMTP) -> list[Any]:
            out: list[Any] = [dict(c.esmtp_features)]
            out.append(c.docmd("MAIL FROM:<a@b.test> SMTPUTF8"))  # smtplib would not send it
            out.append(c.docmd("MAIL FROM:<a@b.test> BODY=8BITMIME"))
            out.append(c.docmd("MAIL FROM:<a@b.test> SIZE=50000"))  # with our header lines: too big
            out.append(c.sendmail("a@b.test", ["bob@example.test"], PLAIN))
            return out

        features, utf8, eight, size, plain = await asyncio.to_thread(_talk, _port(gw), steps)
    finally:
        await gw.stop(grace=1)
    assert "smtputf8" not in features and "8bitmime" not in features
    assert features["size"] == str(50000 - HEADER_ROOM)
    assert utf8[0] == 555 and eight[0] == 555  # refused at MAIL: never offered
    assert size == (552, b"5.3.4 Message size exceeds fixed limit of %d octets" % (50000 - 1024))
    assert plain == {}
    assert len(down.messages) == 1  # only the plain one; the downstream saw no other MAIL
    assert sum(line.startswith(b"MAIL") for line in down.lines) == 1


async def test_what_the_downstream_has_is_offered_and_delivered(tmp_path: Path, fake: Any) -> None:
    down = await fake(extensions=("PIPELINING", "8BITMIME", "SMTPUTF8"))
    gw = await _gateway(tmp_path, down.port)
    try:
        await _learned(gw)
        content = "Subject: Grüße\r\n\r\nschöne Grüße\r\n".encode()

        def steps(c: smtplib.SMTP) -> list[Any]:
            features = dict(c.esmtp_features)
            sent = c.sendmail(
                "a@b.test", ["jörg@example.test"], content, ["SMTPUTF8", "BODY=8BITMIME"]
            )
            return [features, sent]

        features, sent = await asyncio.to_thread(_talk, _port(gw), steps)
    finally:
        await gw.stop(grace=1)
    assert "smtputf8" in features and "8bitmime" in features
    assert features["size"] == str(25 * 1024 * 1024)  # the downstream announced no SIZE
    assert sent == {}
    assert down.messages and down.messages[0].endswith(content)


async def test_maildir_offers_everything(tmp_path: Path) -> None:
    gw = await _gateway(tmp_path, None)
    try:
        features = await asyncio.to_thread(_talk, _port(gw), lambda c: dict(c.esmtp_features))
    finally:
        await gw.stop(grace=1)
    assert "smtputf8" in features and "8bitmime" in features


async def test_unknown_downstream_gives_4xx_at_mail_not_5xx_after_data(
    tmp_path: Path, fake: Any
) -> None:
    """Down at start: the configured set is offered; a MAIL that needs an extension waits for
    the downstream and, when it comes up without it, gets 451 at MAIL; down still: 451 too."""
    port = free_port()
    gw = await _gateway(tmp_path, port)
    try:

        def first(c: smtplib.SMTP) -> list[Any]:
            return [dict(c.esmtp_features), c.mail("a@b.test", ["SMTPUTF8"])]

        features, still_down = await asyncio.to_thread(_talk, _port(gw), first)
        assert "smtputf8" in features and "8bitmime" in features
        assert still_down == (451, b"4.4.1 Downstream server unreachable, try again later")

        down = await fake(port=port, extensions=("PIPELINING", "SIZE 5000"))

        def second(c: smtplib.SMTP) -> list[Any]:
            features = dict(c.esmtp_features)  # this EHLO came before the downstream was reached
            out = [features, c.mail("a@b.test", ["SMTPUTF8"])]
            c.rset()
            out.append(c.mail("a@b.test", ["BODY=8BITMIME"]))
            c.rset()
            out.append(
                c.docmd("MAIL FROM:<a@b.test> SIZE=4500")
            )  # fits the offer, not the downstream
            c.rset()
            return out

        features, utf8, eight, size = await asyncio.to_thread(_talk, _port(gw), second)
        assert "smtputf8" in features
        assert utf8 == (451, b"4.6.7 SMTPUTF8 is not available now, try again later")
        assert eight == (451, b"4.6.3 8BITMIME is not available now, try again later")
        assert size == (552, b"5.3.4 Message too big for the downstream server")
        # the next session is told the truth
        later = await asyncio.to_thread(_talk, _port(gw), lambda c: dict(c.esmtp_features))
        assert "smtputf8" not in later and "8bitmime" not in later
    finally:
        await gw.stop(grace=1)
    assert not any(line.startswith(b"MAIL") for line in down.lines)
