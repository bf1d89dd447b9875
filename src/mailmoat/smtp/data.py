"""The DATA reader: message content between 354 and the real CRLF.CRLF.

It works on the connection's input buffer (a `bytearray`), takes what it has read out of it
and leaves the rest (the commands after the end of data, pipelined). Dot-stuffing is undone,
every line comes out ending in CRLF. A message line is at most `max_text_line` octets and the
message at most `max_message_size`; a NUL, a bare CR or LF (unless `bare_line_endings` is
"normalise") refuse the message. After a problem the rest is only searched for the end of
data, never inspected, and then refused: the verdict does not depend on how the client's
bytes were cut into reads.
"""

from __future__ import annotations

from typing import NamedTuple

from mailmoat.smtp.events import DataChunk
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.replies import Reply
from mailmoat.smtp.writers import R_DATA_BARE_EOL, R_DATA_NUL, line_too_long, too_big


class DataEnded(NamedTuple):
    """The real end of data, the message passed: its last content (maybe b"") and size."""

    content: bytes
    size: int


class DataRefused(NamedTuple):
    """The message is refused with `reply`; `close`: the session ends too."""

    reason: str
    reply: Reply
    close: bool = False


class DataReader:
    """One message's content, read as it arrives."""

    __slots__ = (
        "_limits",
        "_max_line",
        "_max_size",
        "_normalise",
        "_problem",
        "line_start",
        "size",
    )

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._max_line = limits.max_text_line
        self._max_size = limits.max_message_size
        self._normalise = limits.bare_line_endings == "normalise"
        self.line_start = True  # the next byte starts a line that followed a real CRLF
        self.size = 0  # content octets passed on so far
        self._problem: DataRefused | None = None

    def __call__(self, buf: bytearray) -> DataChunk | DataEnded | DataRefused | None:
        """The next thing `buf` holds: content, the end of data, a refusal (once the end of
        a refused message is found, or at once for a bare line ending that closes), or None
        while nothing complete is there."""
        if self._problem is not None:
            return self._discard(buf)
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) >= self._wire_line_limit(self.line_start, buf):
                self._problem = DataRefused("line_too_long", line_too_long(self._limits))
                return self._discard(buf)
            return None
        block = bytes(buf[: last + 1])
        del buf[: last + 1]
        return self._block(block, buf)

    def _plain_run(self, block: bytes, start: int) -> tuple[int, bytes | None]:
        """Where the run of lines from `start` to the next line that starts with a dot ends,
        and the run itself if every line in it is plain: CRLF endings only, no NUL, none
        too long. Checked in C (split and memchr are the fastest primitives)."""
        # In a run of CRLF lines a dot line follows a CRLF. memchr first: in most blocks
        # the first dot is the end of data, or there is none (base64).
        dot = block.find(b".", start)
        if dot >= 0 and not (dot >= start + 2 and block[dot - 2 : dot] == b"\r\n"):
            dot = block.find(b"\r\n.", dot)
            dot = dot if dot < 0 else dot + 2
        stop = len(block) if dot < 0 else dot
        run = block if start == 0 and stop == len(block) else block[start:stop]
        lines = run.split(b"\r\n")  # the last is b"": the run ends in LF
        rest = b"".join(lines)
        plain = (
            b"\r" not in rest
            and b"\n" not in rest
            and b"\x00" not in rest
            and max(map(len, lines)) + 2 <= self._max_line
        )
        return stop, run if plain else None

    def _wire_line_limit(self, real_start: bool, line: bytes | bytearray) -> int:
        """Longest line on the wire, CRLF included: RFC 5321 §4.5.3.1.6 does not count the
        dot that stuffing added, so a line that starts with one may be one octet longer."""
        return self._max_line + (1 if real_start and line[:1] == b"." else 0)

    def _block(self, block: bytes, buf: bytearray) -> DataChunk | DataEnded | DataRefused | None:
        """Complete content lines (`block` ends in LF). A run of plain lines up to the next
        line that starts with a dot is checked and copied whole (`_plain_run`); that dot
        line, and every line of a run that is not plain, goes through the loop below. What
        is not read yet goes back to the front of `buf`."""
        # Problems are found line by line and the first one wins: everything after it is
        # only searched for the end of data, never inspected. `__call__` works the same way
        # when a long line arrives in pieces, so the verdict does not depend on how the
        # client's bytes were cut into reads. A plain run has no problem but size.
        out: list[bytes] = []
        size = 0
        max_size = self._max_size
        start = 0
        end = len(block)
        slow_until = 0  # the lines before this offset are looked at one by one
        while start < end:
            if start >= slow_until and block[start] != 0x2E:  # not a line that starts with "."
                stop, run = self._plain_run(block, start)
                if run is not None:
                    out.append(run)
                    size += len(run)
                    start = stop
                    self.line_start = True
                    if self.size + size > max_size:
                        self._problem = DataRefused("message_too_big", too_big(self._limits))
                        buf[0:0] = block[start:]
                        return self._discard(buf)
                    continue
                slow_until = stop
            lf = block.index(b"\n", start)
            crlf = lf > start and block[lf - 1] == 0x0D
            line = block[start : lf - 1 if crlf else lf]
            real_start = self.line_start
            if len(line) + 2 > self._wire_line_limit(real_start, line):
                self._problem = DataRefused("line_too_long", line_too_long(self._limits))
                buf[0:0] = block[start:]  # discard from the start of the long line
                return self._discard(buf)
            self.line_start = crlf
            start = lf + 1
            if real_start and crlf and line == b".":
                buf[0:0] = block[start:]  # what follows is the next command(s)
                return self._end(out, size)
            if b"\x00" in line:
                self._problem = DataRefused("nul", R_DATA_NUL)
            if not crlf or b"\r" in line:
                if not self._normalise:
                    buf.clear()
                    return DataRefused("bare_eol", R_DATA_BARE_EOL, close=True)
                pieces = line.split(b"\r")
            else:
                pieces = [line]
            if real_start and pieces[0].startswith(b"."):
                pieces[0] = pieces[0][1:]
            if self._problem is not None:
                buf[0:0] = block[start:]
                return self._discard(buf)
            for piece in pieces:
                out.append(piece + b"\r\n")
                size += len(piece) + 2
            if self.size + size > max_size:
                self._problem = DataRefused("message_too_big", too_big(self._limits))
                buf[0:0] = block[start:]
                return self._discard(buf)
        return self._emit(b"".join(out), size, buf)

    def _emit(self, content: bytes, size: int, buf: bytearray) -> DataChunk | DataRefused | None:
        self.size += size
        if self.size > self._max_size:
            self._problem = DataRefused("message_too_big", too_big(self._limits))
            return self._discard(buf)
        if not content:
            return None
        return DataChunk(content)

    def _end(self, out: list[bytes], size: int) -> DataEnded | DataRefused:
        self.size += size
        if self.size > self._max_size:
            return DataRefused("message_too_big", too_big(self._limits))
        return DataEnded(b"".join(out), self.size)

    def _discard(self, buf: bytearray) -> DataRefused | None:
        """After a problem: drop content, look only for the real CRLF.CRLF, then refuse."""
        if self.line_start:  # the last line ended in CRLF: a "." line right here ends it
            buf[0:0] = b"\r\n"
            self.line_start = False
        i = buf.find(b"\r\n.\r\n")
        if i < 0:
            del buf[: max(0, len(buf) - 4)]  # keep what could be the start of CRLF.CRLF
            return None
        del buf[: i + 5]
        return self._problem
