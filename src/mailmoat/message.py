"""What passes from the session to delivery: the envelope and the spooled message.

The message is held exactly as the client meant it: dot-stuffing undone, every line ending in
CRLF. It lives in memory up to `memory_limit` bytes and in an unlinked temporary file beyond,
so a session's memory stays bounded whatever the message size; and all the spools of a process
together hold at most their `SpoolBudget` in memory, past which new data goes to disk too, so
many sessions in DATA at once cannot add up to more memory than that.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Literal

CHUNK = 64 * 1024


@dataclass(slots=True)
class Envelope:
    """The accepted envelope of one transaction."""

    mail_from: str
    """Reverse path without angle brackets; "" is the null sender."""
    rcpt_to: list[str] = field(default_factory=list)
    body: Literal["7BIT", "8BITMIME"] | None = None
    smtputf8: bool = False
    declared_size: int | None = None


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

    def __init__(self, memory_limit: int = 256 * 1024, budget: SpoolBudget | None = None) -> None:
        self._limit = memory_limit
        self._budget = budget
        self._memory = bytearray()
        self._file: BinaryIO | None = None  # once rolled over; closed by close()
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
        """Yield the content from the start; safe to call more than once."""
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
