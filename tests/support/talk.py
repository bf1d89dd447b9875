"""The asyncio SMTP test client: raw replies, and how long each one took (tests and bench/)."""

from __future__ import annotations

import asyncio
import contextlib
import time


class Talk:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float = 10.0
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.timeout = timeout
        """Default bound on the wait for one reply, in seconds."""
        self.greeting = b""

    @classmethod
    async def open(
        cls, port: int, source: str = "127.0.0.1", timeout: float = 10.0, preamble: bytes = b""
    ) -> Talk:
        """Connect from `source` (any 127.0.0.0/8 address), send `preamble` (a PROXY header,
        say) and read the greeting."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        writer.write(preamble)
        talk = cls(reader, writer, timeout)
        talk.greeting = await talk.reply()
        return talk

    async def reply(self, timeout: float | None = None) -> bytes:
        """One complete (possibly multi-line) reply, raw; what came before the server closed
        (b"" when nothing did)."""
        out = b""
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            while True:
                line = await self.reader.readline()
                if not line:
                    return out
                out += line
                if line[3:4] != b"-":
                    return out

    async def command(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        await self.writer.drain()
        return await self.reply()

    async def timed(self, line: str) -> tuple[bytes, float]:
        start = time.perf_counter()
        answer = await self.command(line)
        return answer, time.perf_counter() - start

    async def closed(self, timeout: float = 5.0) -> bool:
        """True when the server has closed the connection."""
        try:
            async with asyncio.timeout(timeout):
                return await self.reader.read(1) == b""
        except (TimeoutError, ConnectionError):
            return False

    def abort(self) -> None:
        """Drop the connection at once: no QUIT, no waiting."""
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()

    async def start_mail(self, helo: str = "client.test", sender: str = "s@sender.test") -> None:
        assert (await self.command(f"EHLO {helo}")).startswith(b"250")
        assert (await self.command(f"MAIL FROM:<{sender}>")).startswith(b"250")
