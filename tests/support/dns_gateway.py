"""Shared pieces of the DNS check tests and bench/dns_checks.py: a real gateway (in the test's
event loop) whose DNS checks ask the in-process test zone (tests/support/fake_dns.py) or a real
name server, a fake downstream that records what it receives byte for byte, a client that talks
from any 127.0.0.0/8 address, DKIM signing with the test zone's key, and the log lines."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import dkim

from mailmoat import config, logs
from mailmoat.dns import Resolver
from mailmoat.server.gateway import Gateway
from tests.support import dns_zone as zone
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_downstream import FakeDownstream
from tests.support.talk import Talk

RCPT = "alice@example.test"


def message(sender: str = "a@sender.test", body: str = "Hello.\r\n", extra: str = "") -> bytes:
    return (
        f"From: Sender <{sender}>\r\n"
        "To: Alice <alice@example.test>\r\n"
        "Subject: test of the DNS checks\r\n"
        "Message-ID: <1@sender.test>\r\n"
        f"{extra}"
        "\r\n"
        f"{body}"
    ).encode()


def sign(msg: bytes, domain: str = "sender.test", selector: str = zone.SELECTOR) -> bytes:
    signature = dkim.sign(
        msg,
        selector.encode(),
        domain.encode(),
        zone.dkim_keys().private_pem,
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    return signature + msg


def verify_with_zone(msg: bytes) -> bool:
    """dkimpy's own verification of delivered bytes, with the test zone's key."""
    key = f"v=DKIM1; k=rsa; p={zone.dkim_keys().public_b64}".encode()
    return bool(dkim.verify(msg, dnsfunc=lambda name, timeout=5: key))


@dataclass
class Outcome:
    replies: dict[str, bytes] = field(default_factory=dict)

    def code(self, stage: str) -> int:
        text = self.replies.get(stage, b"")
        return int(text[:3]) if text[:3].isdigit() else 0

    @property
    def last(self) -> bytes:
        return list(self.replies.values())[-1]


@dataclass
class DnsGateway:
    gateway: Gateway
    port: int
    downstream: FakeDownstream

    async def send(
        self,
        source: str = zone.GOOD_IP,
        helo: str = zone.GOOD_HELO,
        sender: str = "a@sender.test",
        msg: bytes | None = None,
        rcpt: str = RCPT,
        preamble: bytes = b"",
    ) -> Outcome:
        """One transaction; stops at the first refusal. msg None: message(sender).
        `preamble`: sent first (a PROXY header)."""
        out = Outcome()
        talk = await Talk.open(self.port, source=source, preamble=preamble)
        try:
            out.replies["connect"] = talk.greeting
            if not talk.greeting.startswith(b"220"):
                return out
            for stage, line in (
                ("helo", f"EHLO {helo}"),
                ("mail", f"MAIL FROM:<{sender}>"),
                ("rcpt", f"RCPT TO:<{rcpt}>"),
                ("data", "DATA"),
            ):
                out.replies[stage] = answer = await talk.command(line)
                if answer[:1] not in (b"2", b"3"):
                    return out
            body = msg if msg is not None else message(sender or "a@sender.test")
            talk.writer.write(body + b".\r\n")
            out.replies["message"] = await talk.reply(timeout=30)
            await talk.command("QUIT")
        finally:
            await talk.close()
        return out


@contextlib.asynccontextmanager
async def dns_gateway(
    nameserver: str | ZoneNameserver, **overrides: Any
) -> AsyncIterator[DnsGateway]:
    """A gateway whose DNS checks ask `nameserver`: a server's "host:port", or an in-process
    zone."""
    downstream = await FakeDownstream().start()
    real = isinstance(nameserver, str)
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": zone.OUR_HOSTNAME,
            "server.uvloop": False,
            "domains.local": ["example.test"],
            "relay.downstream": f"127.0.0.1:{downstream.port}",
            "dns.nameservers": [nameserver] if real else [],
            "dns.timeout": 1.0,
            **overrides,
        },
    )
    resolver = (
        Resolver(settings.dns, nameservers=[nameserver])
        if isinstance(nameserver, ZoneNameserver)
        else None
    )
    gw = Gateway(settings, resolver=resolver)
    bound = await gw.start()
    try:
        yield DnsGateway(gw, bound[0][1], downstream)
    finally:
        await gw.stop(grace=1)
        await downstream.stop()


class LogLines(logging.Handler):
    """Collects mailmoat's log events (name and fields) during a test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.getMessage(), dict(getattr(record, "fields", {}))))

    def of(self, name: str) -> list[dict[str, Any]]:
        return [f for n, f in self.events if n == name]


@contextlib.contextmanager
def captured_logs() -> Any:
    handler = LogLines()
    old_level = logs.log.level
    logs.log.addHandler(handler)
    logs.log.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logs.log.removeHandler(handler)
        logs.log.setLevel(old_level)
