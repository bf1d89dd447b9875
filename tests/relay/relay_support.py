"""Shared pieces of the relay tests: constants, type aliases and the fake downstream servers.

* `Recorder`: a handler for aiosmtpd's SMTP or LMTP server (a real, independent implementation)
  that records every message and can refuse recipients or the end of data.
* `FakeFactory`: the fixture that starts tests/support/fake_downstream.py's `FakeDownstream`.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat.config import Settings
from mailmoat.message import Message
from tests.support.fake_downstream import FakeDownstream

TRACE = b"Received: from client.example (client.example [192.0.2.1])\r\n\tby gw.test; now\r\n"


SettingsFactory = Callable[..., Settings]


MessageFactory = Callable[..., Message]


@dataclass
class TLSFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


@dataclass
class Received:
    mail_from: str
    mail_options: list[str]
    rcpt_tos: list[str]
    content: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: records every message; per-recipient and end-of-data answers on demand."""

    lmtp: bool = False
    pipelining: bool = False
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    data_reply: str | None = None
    messages: list[Received] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.rcpt_replies:
            return self.rcpt_replies[address]
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.commands.append("RSET")
        return "250 2.0.0 Ok"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert envelope.original_content is not None and envelope.mail_from is not None
        self.messages.append(
            Received(
                envelope.mail_from,
                list(envelope.mail_options),
                list(envelope.rcpt_tos),
                envelope.original_content,
            )
        )
        if self.data_reply is not None:
            return self.data_reply
        if self.lmtp:
            return "\r\n".join(f"250 2.0.0 <{r}> delivered" for r in envelope.rcpt_tos)
        return "250 2.0.0 Ok: queued as DOWN1"


AiosmtpdFactory = Callable[..., Awaitable[tuple[int, Recorder]]]


FakeFactory = Callable[..., Awaitable[FakeDownstream]]
