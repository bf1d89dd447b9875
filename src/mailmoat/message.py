"""What passes from the session to delivery: the envelope and the spooled message.

The message is held exactly as the client meant it: dot-stuffing undone, every line ending in
CRLF. It lives in memory up to `memory_limit` bytes and in an unlinked temporary file beyond,
so a session's memory stays bounded whatever the message size; and all the spools of a process
together hold at most their `SpoolBudget` in memory, past which new data goes to disk too, so
many sessions in DATA at once cannot add up to more memory than that.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

from mailmoat.config import ServerSettings, default_of
from mailmoat.headers import WANTED, Headers, scan
from mailmoat.limits import HEADER_SCAN_CHUNK as SCAN_CHUNK
from mailmoat.limits import SPOOL_CHUNK as CHUNK
from mailmoat.smtp.envelope import Envelope

T = TypeVar("T")


class SpoolBudget:
    """Message bytes that all the spools sharing it may hold in memory together."""

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, n: int) -> bool:
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n: int) -> None:
        self.used -= n


class Spool:
    """Append-only message store: memory first, an anonymous temporary file past a limit
    (its own, or the shared budget's).

    (Not `tempfile.SpooledTemporaryFile`: its Python-level file wrapper cost more than the
    rest of the spooling of a small message.)"""

    def __init__(
        self,
        memory_limit: int = default_of(ServerSettings, "spool_memory"),
        budget: SpoolBudget | None = None,
    ) -> None:
        self._limit = memory_limit
        self._budget = budget
        self._memory = bytearray()
        self._file: BinaryIO | None = None  # once rolled over; closed by close()
        self._closed = False
        self.size = 0

    @property
    def in_memory(self) -> bool:
        """True while the content has not rolled over into the temporary file."""
        return self._file is None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.size += len(data)
        if self._file is not None:
            self._file.write(data)
        elif self.size <= self._limit and (self._budget is None or self._budget.take(len(data))):
            self._memory += data
        else:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 (unlinked; close() ends it)
            self._file.write(self._memory)
            self._file.write(data)
            self._release()

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """Yield the content from the start; safe to call more than once. Reading a closed
        spool raises ValueError: its content is gone, and must never pass for an empty one."""
        if self._closed:
            raise ValueError("reading a closed spool")
        if self._file is None:
            memory = self._memory
            if len(memory) <= size:  # the usual message: one copy, no slice
                if memory:
                    yield bytes(memory)
                return
            for start in range(0, len(memory), size):
                yield bytes(memory[start : start + size])
            return
        self._file.seek(0)
        while block := self._file.read(size):
            yield block
        self._file.seek(0, 2)

    def getvalue(self) -> bytes:
        return b"".join(self.chunks())

    def close(self) -> None:
        self._closed = True
        if self._file is not None:
            self._file.close()
        self._release()

    def _release(self) -> None:
        """Drop the bytes held in memory and give them back to the budget."""
        if self._budget is not None:
            self._budget.give(len(self._memory))
        self._memory = bytearray()

    def __del__(self) -> None:  # a spool dropped unclosed still gives its budget back
        self._release()


@dataclass(slots=True)
class Message:
    """A message ready for delivery: mailmoat's own header lines, then the client's content,
    less the byte ranges in `omit` (header fields a check removed, such as forged
    Authentication-Results). Everything else goes out byte for byte."""

    envelope: Envelope
    spool: Spool
    queue_id: str
    trace: bytes = b""
    """Header lines mailmoat adds in front (Received:), each ending in CRLF."""
    omit: list[tuple[int, int]] = field(default_factory=list)
    """[start, end) byte ranges of the spooled content left out, sorted, not overlapping."""
    headers: Headers | None = None
    """The scan of the client's header block (`headers_now`), made once per message."""
    max_header: int | None = None
    """The scan's limit (smtp.max_header_size; None: none)."""

    def headers_now(self) -> Headers | None:
        """The header scan of the spooled content; None while the spool is on disk and not
        scanned yet (then await `read_headers`, which reads it in a worker thread)."""
        if self.headers is None and self.spool.in_memory:
            self.headers = scan(self.spool.chunks(SCAN_CHUNK), WANTED, self.max_header)
        return self.headers

    async def read_headers(self) -> Headers:
        headers = self.headers_now()
        if headers is None:  # a spool on disk is read in a worker thread, as the relay does
            chunks = self.spool.chunks(SCAN_CHUNK)
            headers = await in_thread(scan, chunks, WANTED, self.max_header)
            self.headers = headers
        return headers

    @property
    def size(self) -> int:
        size = len(self.trace) + self.spool.size
        return size - sum(end - start for start, end in self.omit) if self.omit else size

    def chunks(self) -> Iterator[bytes]:
        if self.trace:
            yield self.trace
        if not self.omit:
            yield from self.spool.chunks()
            return
        ranges = iter(self.omit)
        cut = next(ranges, None)
        offset = 0
        for chunk in self.spool.chunks():
            end = offset + len(chunk)
            pos = offset
            while cut is not None and cut[0] < end:
                if cut[0] > pos:
                    yield chunk[pos - offset : cut[0] - offset]
                pos = max(pos, min(cut[1], end))
                if cut[1] > end:
                    break
                cut = next(ranges, None)
            if pos < end:
                yield chunk[pos - offset :]
            offset = end


async def in_thread(func: Callable[..., T], /, *args: object) -> T:
    """`asyncio.to_thread`, except that a cancelled caller waits for the thread to end before
    the cancellation goes on. A thread cannot be stopped: when it reads a spool, whoever frees
    the spool once the await is over (a `finally`) must not do it under the thread's feet."""
    fut = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        while not fut.done():
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                continue
            except Exception:  # the caller is cancelled: the outcome is moot
                break
        if not fut.cancelled():
            fut.exception()  # retrieved: no "exception was never retrieved" noise
        raise
