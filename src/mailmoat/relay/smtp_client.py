"""A small asyncio client for the downstream SMTP or LMTP server.

Why our own and not aiosmtplib (which DESIGN.md prefers for this job):

* LMTP (RFC 2033): after the end of data an LMTP server gives one reply per accepted recipient;
  aiosmtplib speaks SMTP only and reads a single reply.
* PIPELINING (RFC 2920): MAIL, every RCPT and DATA go out in one write, and we decide exactly what
  happens when a recipient is refused but the server already answered DATA with 354 (we drop the
  connection rather than send an empty or partial message). aiosmtplib does not pipeline.
* Exact control of the bytes written: every command is serialised here from the envelope, the
  message is dot-stuffed here, nothing a client sent reaches the downstream unparsed, and every
  reply, buffer and wait is bounded (`ReplyParser` limits, per-reply timeouts, write timeouts).
* STARTTLS that refuses plaintext injected after the 220 (CVE-2011-0411 class).

The client never reads anything from the Internet-facing session: it only writes what it
serialises itself from a `Message`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass, field

from mailmoat.config import RelaySettings, Settings, split_endpoint
from mailmoat.limits import DOWNSTREAM_CLOSE_TIMEOUT
from mailmoat.limits import DOWNSTREAM_WRITE_BATCH as WRITE_BATCH
from mailmoat.message import Message, in_thread
from mailmoat.relay.client_errors import (
    ConnectFailed,
    ConnectionLost,
    DownstreamError,
    DownstreamRefused,
    DownstreamTimeout,
    InternalError,
    ProtocolViolation,
    StaleConnection,
    TLSFailed,
    Unsupported,
)
from mailmoat.relay.message_writer import DotStuffer, envelope_address
from mailmoat.relay.reply_reader import ReplyReader, abort_transport, close_transport
from mailmoat.smtp.replies import Reply, ReplyParser, reply

log = logging.getLogger("mailmoat.relay.smtp_client")


def make_tls_context(relay: RelaySettings) -> ssl.SSLContext:
    """TLS context for STARTTLS downstream (reads the CA file: call it off the event loop)."""
    ctx = ssl.create_default_context(cafile=str(relay.tls_ca_file) if relay.tls_ca_file else None)
    if not relay.tls_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def positive(r: Reply | None) -> bool:
    return r is not None and 200 <= r.code < 300


@dataclass(slots=True)
class Transaction:
    """What the server answered in one mail transaction."""

    mail: Reply
    rcpts: list[Reply | None] = field(default_factory=list)
    """One per envelope recipient, in order; None where the RCPT was not sent."""
    data: Reply | None = None
    """Reply to DATA (354 expected); None if DATA was not sent."""
    end: list[Reply] = field(default_factory=list)
    """End-of-data replies: one for SMTP, one per recipient for LMTP; empty if no data sent."""


# --- the client --------------------------------------------------------------------------------


class DownstreamClient:
    """One connection to the downstream server. Use `connect()`, then `send()` per message."""

    def __init__(
        self, settings: Settings, transport: asyncio.Transport, protocol: ReplyReader
    ) -> None:
        self._relay = settings.relay
        helo = settings.relay.helo_name or settings.server.hostname
        self._helo = helo.encode("ascii", "replace")
        self._transport = transport
        self._proto = protocol
        self.lmtp = settings.relay.protocol == "lmtp"
        self.extensions: dict[str, str] = {}
        """EHLO/LHLO keywords (upper case) -> their parameters."""
        self.tls = False
        self._in_tx = False
        """A transaction is under way (or was left half done by an error): not reusable."""
        self.transactions = 0
        """Transactions completed on this connection (a message sent and answered)."""
        self._broken = False

    # connection setup

    @classmethod
    async def connect(
        cls, settings: Settings, tls_context: ssl.SSLContext | None = None
    ) -> DownstreamClient:
        relay = settings.relay
        if relay.downstream is None:
            raise ConnectFailed("no downstream server configured")
        host, port = split_endpoint(relay.downstream)
        loop = asyncio.get_running_loop()
        where = f"{host}:{port}"
        transport: asyncio.Transport | None = None
        client: DownstreamClient | None = None
        try:
            try:
                async with asyncio.timeout(relay.connect_timeout):
                    transport, proto = await loop.create_connection(ReplyReader, host, port)
                    client = cls(settings, transport, proto)  # the greeting is owed already
                    greeting = await proto.next_reply(relay.connect_timeout)
            except TimeoutError:
                if transport is None:
                    raise ConnectFailed(f"{where}: connect timed out") from None
                raise DownstreamTimeout(f"{where}: no greeting within connect_timeout") from None
            except OSError as err:
                raise ConnectFailed(f"{where}: {err.strerror or err}") from None
            if greeting.code != 220:
                raise DownstreamRefused(f"{where} greeting: {greeting}")
            await client._hello()
            await client._starttls(host, tls_context)
        except BaseException:
            if client is not None:
                client.abort()  # the TLS transport once STARTTLS is done
            if transport is not None:
                abort_transport(transport)
            raise
        return client

    async def _hello(self) -> None:
        if self.lmtp:
            r = await self._command(b"LHLO " + self._helo + b"\r\n")
        else:
            r = await self._command(b"EHLO " + self._helo + b"\r\n")
            if r.permanent:  # an old server without ESMTP: HELO, and no extensions
                r = await self._command(b"HELO " + self._helo + b"\r\n")
                if positive(r):
                    self.extensions = {}
                    return
        if not positive(r):
            raise DownstreamRefused(f"{'LHLO' if self.lmtp else 'EHLO'}: {r}")
        ext = {}
        for line in r.lines[1:]:
            keyword, _, params = line.strip().partition(" ")
            if keyword:
                ext[keyword.upper()] = params.strip()
        self.extensions = ext

    async def _starttls(self, host: str, tls_context: ssl.SSLContext | None) -> None:
        mode = self._relay.starttls
        if mode == "off":
            return
        if "STARTTLS" not in self.extensions:
            if mode == "require":
                raise TLSFailed("STARTTLS required but not offered by downstream")
            return
        r = await self._command(b"STARTTLS\r\n")
        if r.code != 220:
            if mode == "require":
                raise TLSFailed(f"STARTTLS refused: {r}")
            return  # opportunistic: carry on in plaintext
        if self._proto.replies or self._proto.partial or self._proto.error is not None:
            self._break()
            raise ProtocolViolation("data after the STARTTLS reply (plaintext injection)")
        if tls_context is None:
            tls_context = await asyncio.to_thread(make_tls_context, self._relay)
        loop = asyncio.get_running_loop()
        try:
            new = await loop.start_tls(
                self._transport,
                self._proto,
                tls_context,
                server_hostname=host,
                ssl_handshake_timeout=self._relay.command_timeout,
            )
        except OSError as err:  # ssl.SSLError, ConnectionError and TimeoutError among them
            raise TLSFailed(f"TLS handshake: {err}") from None
        if new is None:
            raise TLSFailed("TLS handshake: connection closed")
        self._transport = new
        self._proto.transport = new
        self._proto.parser = ReplyParser()
        self.tls = True
        await self._hello()

    # low-level I/O

    async def _write(self, *data: bytes) -> None:
        """Write `data` in one go (one send for the transport), then wait while the write
        buffer is over its high-water mark (bounded by command_timeout)."""
        proto = self._proto
        if proto.error is not None:
            raise proto.error
        if proto.closed or self._transport.is_closing():
            raise ConnectionLost("connection closed by downstream")
        if len(data) == 1:
            self._transport.write(data[0])
        else:
            self._transport.writelines(data)
        if not proto.paused and proto.error is None and not proto.closed:
            return
        try:
            async with asyncio.timeout(self._relay.command_timeout):
                await proto.drain()
        except TimeoutError:
            self._break()
            raise DownstreamTimeout("downstream stopped reading") from None
        except DownstreamError:
            self._break()
            raise

    async def _read(self, timeout: float, what: str) -> Reply:
        try:
            r = await self._proto.next_reply(timeout)
        except TimeoutError:
            self._break()
            raise DownstreamTimeout(f"no reply to {what} within {timeout:g}s") from None
        except DownstreamError:
            self._break()
            raise
        if r.code == 421:  # the server is closing the connection
            self._broken = True
        return r

    async def _command(self, line: bytes) -> Reply:
        self._proto.owed += 1
        await self._write(line)
        what = line.split(b" ", 1)[0].split(b":", 1)[0].strip().decode("ascii", "replace")
        r = await self._read(self._relay.command_timeout, what)
        if self._proto.replies:
            self._break()
            raise ProtocolViolation(f"more than one reply to {what}")
        return r

    def _break(self) -> None:
        self._broken = True
        abort_transport(self._transport)

    # state

    @property
    def usable(self) -> bool:
        """Healthy and idle: no error, not closed, nothing unsolicited received."""
        p = self._proto
        return not (
            self._broken
            or self._in_tx
            or p.closed
            or p.error is not None
            or p.replies
            or p.partial
            or self._transport.is_closing()
        )

    def abort(self) -> None:
        """Drop the connection at once (the server discards any unfinished transaction).
        Nothing to do once it is lost: a TLS transport cannot even be aborted then."""
        self._broken = True
        abort_transport(self._transport)

    async def close(self, timeout: float = DOWNSTREAM_CLOSE_TIMEOUT) -> None:
        """QUIT politely if the connection is healthy, then wait (bounded) until it is closed."""
        try:
            if self.usable:
                with contextlib.suppress(DownstreamError):
                    self._proto.owed += 1
                    self._transport.write(b"QUIT\r\n")
                    await self._read(min(timeout, self._relay.command_timeout), "QUIT")
            close_transport(self._transport)
            async with asyncio.timeout(timeout):
                await self._proto.lost
        except TimeoutError:
            pass
        finally:
            self._broken = True
            abort_transport(self._transport)

    # the transaction

    def _mail_command(self, message: Message) -> bytes:
        env = message.envelope
        ext = self.extensions
        params: list[bytes] = []
        if env.smtputf8 and "SMTPUTF8" not in ext:
            raise Unsupported(  # 4xx: the client was offered it (relay.capabilities)
                reply(451, "4.6.7", "SMTPUTF8 is not available now, try again later"),
                "message needs SMTPUTF8, downstream does not offer it",
            )
        if env.body == "8BITMIME" and "8BITMIME" not in ext:
            raise Unsupported(
                reply(451, "4.6.3", "8BITMIME is not available now, try again later"),
                "message needs 8BITMIME, downstream does not offer it",
            )
        if "SIZE" in ext:
            limit = ext["SIZE"]
            if limit.isdigit() and int(limit) and message.size > int(limit):
                raise Unsupported(
                    reply(552, "5.3.4", "Message too big for the downstream server"),
                    f"message of {message.size} octets, downstream SIZE {limit}",
                )
            params.append(b"SIZE=%d" % message.size)
        if env.body == "8BITMIME":
            params.append(b"BODY=8BITMIME")
        if env.smtputf8:
            params.append(b"SMTPUTF8")
        path = envelope_address(env.mail_from, env.smtputf8)
        return b"MAIL FROM:<" + path + b">" + b"".join(b" " + p for p in params) + b"\r\n"

    async def send(self, message: Message) -> Transaction:
        """Run one transaction. Raises DownstreamError on connection-level failures only.

        The message is sent only if MAIL and every RCPT were accepted and DATA got 354; otherwise
        the transaction is reset (RSET), or, when the server is already waiting for data, the
        connection is dropped so that the server discards the transaction.
        """
        env = message.envelope
        if not env.rcpt_to:
            raise InternalError("message without recipients")
        mail = self._mail_command(message)
        rcpts = [b"RCPT TO:<" + envelope_address(r, env.smtputf8) + b">\r\n" for r in env.rcpt_to]
        reused = self.transactions > 0
        self._in_tx = True
        self._proto.answered = ""
        if "PIPELINING" in self.extensions:
            tx = await self._pipelined(mail, rcpts, reused)
        else:
            tx = await self._lockstep(mail, rcpts, reused)
        accepted = positive(tx.mail) and all(positive(r) for r in tx.rcpts)
        if tx.data is not None and tx.data.code == 354 and not accepted:
            # The server waits for the message, yet not every recipient is in. Sending ".\r\n"
            # would deliver an empty message and RSET would become message text: drop instead.
            log.info("recipient refused after DATA was pipelined; dropping the connection")
            self.abort()
            return tx
        if not accepted or tx.data is None or tx.data.code != 354:
            self._in_tx = False
            await self._reset()
            return tx
        count = len(env.rcpt_to) if self.lmtp else 1
        await self._send_data(message, count)
        for _ in range(count):
            r = await self._read(self._relay.data_timeout, "end of data")
            tx.end.append(self._answers(r, "end of data", "245"))
        self._proto.answered = f"{message.queue_id} {' / '.join(str(r) for r in tx.end)}"
        self._in_tx = False
        self.transactions += 1
        if not all(positive(r) for r in tx.end):
            await self._reset()
        return tx

    async def probe(self, sender: str, recipient: str) -> tuple[Reply, Reply | None]:
        """A call-ahead: MAIL FROM and RCPT TO, then RSET. Never DATA, so no message can result.

        Returns the MAIL reply and the RCPT reply (None when MAIL was refused and RCPT not sent).
        """
        utf8 = not (sender + recipient).isascii()
        if utf8 and "SMTPUTF8" not in self.extensions:
            raise Unsupported(
                reply(451, "4.6.7", "Downstream server does not support SMTPUTF8"),
                "probe needs SMTPUTF8, downstream does not offer it",
            )
        mail_line = b"MAIL FROM:<" + envelope_address(sender, utf8) + b">"
        if utf8:
            mail_line += b" SMTPUTF8"
        rcpt_line = b"RCPT TO:<" + envelope_address(recipient, utf8) + b">\r\n"
        self._in_tx = True
        mail = await self._command(mail_line + b"\r\n")
        rcpt = await self._command(rcpt_line) if positive(mail) else None
        self._in_tx = False
        await self._reset()
        return mail, rcpt

    async def _first(self, commands: bytes, reused: bool) -> Reply:
        """Send the first commands and read the first reply; a reused connection that turns out
        dead here is 'stale' (the server has seen no message data: safe to retry)."""
        try:
            await self._write(commands)
            r = self._answers(await self._read(self._relay.command_timeout, "MAIL"), "MAIL", "245")
        except ConnectionLost as err:
            if reused:
                raise StaleConnection(f"reused connection: {err.detail}") from None
            raise
        if reused and r.code == 421:
            self.abort()
            raise StaleConnection(f"reused connection: {r}")
        return r

    async def _pipelined(self, mail: bytes, rcpts: list[bytes], reused: bool) -> Transaction:
        self._proto.owed += len(rcpts) + 2
        tx = Transaction(await self._first(b"".join([mail, *rcpts, b"DATA\r\n"]), reused))
        for _ in rcpts:
            r = await self._read(self._relay.command_timeout, "RCPT")
            tx.rcpts.append(self._answers(r, "RCPT", "245"))
        tx.data = self._answers(
            await self._read(self._relay.command_timeout, "DATA"), "DATA", "345"
        )
        return tx

    async def _lockstep(self, mail: bytes, rcpts: list[bytes], reused: bool) -> Transaction:
        self._proto.owed += 1
        tx = Transaction(await self._first(mail, reused))
        if not positive(tx.mail):
            tx.rcpts = [None] * len(rcpts)
            return tx
        for line in rcpts:
            tx.rcpts.append(self._answers(await self._command(line), "RCPT", "245"))
        if all(positive(r) for r in tx.rcpts):
            tx.data = self._answers(await self._command(b"DATA\r\n"), "DATA", "345")
        return tx

    def _answers(self, r: Reply, what: str, classes: str) -> Reply:
        """`r`, if its class can answer `what` (a 250 to DATA is a stray reply, and the real
        answer is still to come): otherwise a protocol violation."""
        if str(r.code)[0] not in classes:
            self._break()
            raise ProtocolViolation(f"{r.code} is no answer to {what}: {r}")
        return r

    async def _send_data(self, message: Message, replies: int) -> None:
        """The content, dot-stuffed, and the end of data: one write per WRITE_BATCH octets
        or so (a single one for most messages, trace header and final dot included). The
        `replies` to the end of data are owed only once the final dot is written: one that
        comes earlier is a violation."""
        if self._proto.replies or self._proto.partial:
            self._break()
            raise ProtocolViolation("more than one reply to DATA")
        stuffer = DotStuffer()
        chunks = message.chunks()
        on_disk = not message.spool.in_memory
        batch: list[bytes] = []
        held = total = 0
        try:
            while True:
                # a spool that rolled over into a file is read in a worker thread
                chunk = await in_thread(next, chunks, None) if on_disk else next(chunks, None)
                if chunk is None:
                    break
                batch.append(stuffer.feed(chunk))
                held += len(chunk)
                total += len(chunk)
                if held >= WRITE_BATCH:
                    await self._write(*batch)
                    batch, held = [], 0
        except (OSError, ValueError) as err:  # the spool could not be read (ValueError: closed)
            self._break()
            raise InternalError(f"reading the message: {err}") from None
        if total != message.size:  # never a truncated message: no final dot, drop the connection
            self._break()
            raise InternalError(f"message read back as {total} of {message.size} octets")
        batch.append(stuffer.end())
        if self._proto.error is None:
            self._proto.owed += replies
        await self._write(*batch)

    async def _reset(self) -> None:
        """RSET after a failed transaction; a connection that does not take it is not reused."""
        if not self.usable:
            return
        try:
            r = await self._command(b"RSET\r\n")
        except DownstreamError:
            self._break()
            return
        if not positive(r):
            self._break()
