"""A small hand-written SMTP/LMTP server on 127.0.0.1: the fake downstream of the tests and
the counting sink of the benchmarks.

It misbehaves on request (refuses recipients, fails or hangs at the end of data, drops the
connection mid-DATA, writes a reply before the final dot, ...), records every command line and
message exactly as received, and counts connections (also the most at once), recipients and
messages. Real SMTP servers for tests are elsewhere: Postfix and smtp-sink (postfix.py,
smtp_sink.py), aiosmtpd (tests/relay/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeDownstream:
    """A minimal SMTP/LMTP server. Behaviour is set by the fields; everything is recorded
    (`record`), or only counted (`record=False`: benchmarks, which run long)."""

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
    ehlo: bytes | None = None
    """Raw answer to EHLO/LHLO instead of the extensions (a 5xx: an old server, HELO only)."""
    helo: bytes = b"250 fake.test\r\n"
    """Raw answer to HELO."""
    starttls: bytes | None = None
    """Raw answer to STARTTLS (for injection tests); STARTTLS must be in `extensions`."""
    command_delay: float = 0.0
    """Seconds to wait before answering MAIL/RCPT/DATA (to see whether the client waits)."""

    record: bool = True
    """Keep `lines`, `reads` and `messages`; the counters below are kept either way."""

    port: int = 0
    server: asyncio.Server | None = None
    delivered: int = 0
    """Messages accepted at the end of data."""
    recipients: Counter[str] = field(default_factory=Counter)
    """Accepted recipients, by address as sent."""
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

    def reset_peak(self) -> None:
        """Start `max_concurrent` again from the connections open now."""
        self.max_concurrent = self.concurrent

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
                    if self.record:
                        self.reads.append(chunk)
                    buf += chunk
                line, _, buf = buf.partition(b"\r\n")
                if self.record:
                    self.lines.append(line)
                verb = line.split(b" ", 1)[0].upper()
                if verb in (b"MAIL", b"RCPT", b"DATA") and self.command_delay:
                    self.events.append(f"wait {verb.decode()}")
                    await asyncio.sleep(self.command_delay)
                    self.events.append(f"reply {verb.decode()} (buffered {len(buf)})")
                if verb in (b"EHLO", b"LHLO") and self.ehlo is not None:
                    writer.write(self.ehlo)
                elif verb == b"HELO":
                    writer.write(self.helo)
                elif verb in (b"EHLO", b"LHLO"):
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
                        self.recipients[addr] += 1
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
        if self.record:
            self.messages.append(
                b"".join((ln[1:] if ln.startswith(b".") else ln) + b"\r\n" for ln in lines)
            )
        if self.on_data == "silent":
            await self.stopping.wait()
            raise ConnectionError("stopping")
        self.delivered += 1
        if self.end is not None:
            writer.write(self.end(accepted))
        elif self.lmtp:
            writer.write(b"".join(b"250 2.0.0 <%s> ok\r\n" % a.encode() for a in accepted))
        else:
            writer.write(b"250 2.0.0 Ok: queued as FAKE1\r\n")
        return rest
