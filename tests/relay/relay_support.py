"""Shared pieces of the relay tests: constants, type aliases and the fake downstream servers.

* `Recorder`: a handler for aiosmtpd's SMTP or LMTP server (a real, independent implementation)
  that records every message and can refuse recipients or the end of data.
* `FakeDownstream`: a small hand-written SMTP/LMTP server that misbehaves on request (refuses
  recipients, fails or hangs at the end of data, drops the connection mid-DATA, ...) and counts
  concurrent connections.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from mailmoat.config import Settings
from mailmoat.message import Message

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


@dataclass
class FakeDownstream:
    """A minimal SMTP/LMTP server. Behaviour is set by the fields; everything is recorded."""

    lmtp: bool = False
    extensions: tuple[str, ...] = ("PIPELINING", "8BITMIME", "SIZE 10000000")
    greeting: bytes | None = b"220 fake.test ESMTP\r\n"
    """None: never greet."""
    mail: Callable[[], bytes] = lambda: b"250 2.1.0 Ok\r\n"
    rcpt: Callable[[str], bytes] = lambda addr: b"250 2.1.5 Ok\r\n"
    data: Callable[[], bytes] = lambda: b"354 go ahead\r\n"
    end: Callable[[list[str]], bytes] | None = None
    """End-of-data answer for the accepted recipients; default 250 (LMTP: one per recipient)."""
    on_data: str = "ok"
    """'ok'; 'close': drop the connection after some message data; 'silent': never answer it;
    'stray': write a 250 once some message data came in, before the final dot."""
    starttls: bytes | None = None
    """Raw answer to STARTTLS (for injection tests); STARTTLS must be in `extensions`."""
    command_delay: float = 0.0
    """Seconds to wait before answering MAIL/RCPT/DATA (to see whether the client waits)."""

    port: int = 0
    server: asyncio.Server | None = None
    connections: int = 0
    concurrent: int = 0
    max_concurrent: int = 0
    lines: list[bytes] = field(default_factory=list)
    """Every command line received, over all connections, in order."""
    reads: list[bytes] = field(default_factory=list)
    """Every chunk read while in command mode (to see how commands arrived)."""
    messages: list[bytes] = field(default_factory=list)
    """Message content after undoing dot-stuffing, exactly as received."""
    events: list[str] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> FakeDownstream:
        self.server = await asyncio.start_server(
            self._client, "127.0.0.1", self.port, limit=1 << 20
        )
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    def drop_all(self) -> None:
        """Abort every open connection from the server side."""
        for w in list(self.writers):
            w.transport.abort()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        self.stopping.set()
        self.drop_all()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=2)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.writers.add(writer)
        self.connections += 1
        self.concurrent += 1
        self.max_concurrent = max(self.max_concurrent, self.concurrent)
        counted = True
        try:
            if self.greeting is None:
                await self.stopping.wait()
                return
            writer.write(self.greeting)
            accepted: list[str] = []
            buf = b""
            while True:
                while b"\r\n" not in buf:
                    chunk = await reader.read(65536)
                    if not chunk:
                        return
                    self.reads.append(chunk)
                    buf += chunk
                line, _, buf = buf.partition(b"\r\n")
                self.lines.append(line)
                verb = line.split(b" ", 1)[0].upper()
                if verb in (b"MAIL", b"RCPT", b"DATA") and self.command_delay:
                    self.events.append(f"wait {verb.decode()}")
                    await asyncio.sleep(self.command_delay)
                    self.events.append(f"reply {verb.decode()} (buffered {len(buf)})")
                if verb in (b"EHLO", b"LHLO"):
                    ext = ["fake.test", *self.extensions]
                    out = "".join(
                        f"250{'-' if i < len(ext) - 1 else ' '}{e}\r\n" for i, e in enumerate(ext)
                    )
                    writer.write(out.encode())
                elif verb == b"STARTTLS":
                    writer.write(self.starttls or b"454 4.7.0 no\r\n")
                elif verb == b"MAIL":
                    accepted = []
                    answer = self.mail()
                    writer.write(answer)
                    if answer.startswith(b"421"):
                        return
                elif verb == b"RCPT":
                    addr = line[9:].strip(b"<>").decode()
                    answer = self.rcpt(addr)
                    if answer.startswith(b"2"):
                        accepted.append(addr)
                    writer.write(answer)
                elif verb == b"DATA":
                    if not accepted:
                        writer.write(b"503 5.5.1 no valid recipients\r\n")
                        continue
                    writer.write(self.data())
                    buf = await self._data(reader, writer, buf, accepted)
                    accepted = []
                elif verb == b"RSET":
                    accepted = []
                    writer.write(b"250 2.0.0 Ok\r\n")
                elif verb == b"QUIT":
                    self.concurrent -= 1
                    counted = False
                    writer.write(b"221 2.0.0 Bye\r\n")
                    await writer.drain()
                    return
                else:
                    writer.write(b"500 5.5.2 what?\r\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if counted:
                self.concurrent -= 1
            writer.close()
            self.tasks.discard(task)
            self.writers.discard(writer)

    async def _data(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        buf: bytes,
        accepted: list[str],
    ) -> bytes:
        await writer.drain()
        raw = bytearray(buf)
        while True:
            if self.on_data == "close" and len(raw) > 100:
                writer.transport.abort()
                raise ConnectionError("closing mid-DATA on purpose")
            if self.on_data == "stray" and len(raw) > 100 and "stray" not in self.events:
                self.events.append("stray")
                writer.write(b"250 2.0.0 stray reply before the final dot\r\n")
            if b"\r\n.\r\n" in b"\r\n" + raw:
                break
            chunk = await reader.read(65536)
            if not chunk:
                raise ConnectionError("client went away in DATA")
            raw += chunk
        end = (b"\r\n" + raw).index(b"\r\n.\r\n")
        # raw[:end] is the content with its last CRLF; ".\r\n" follows
        body, rest = bytes(raw[:end]), bytes(raw[end + 3 :])
        lines = body[:-2].split(b"\r\n") if body else []
        self.messages.append(
            b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
        )
        if self.on_data == "silent":
            await self.stopping.wait()
            raise ConnectionError("stopping")
        if self.end is not None:
            writer.write(self.end(accepted))
        elif self.lmtp:
            writer.write(b"".join(b"250 2.0.0 <%s> ok\r\n" % a.encode() for a in accepted))
        else:
            writer.write(b"250 2.0.0 Ok: queued as FAKE1\r\n")
        return rest


FakeFactory = Callable[..., Awaitable[FakeDownstream]]
