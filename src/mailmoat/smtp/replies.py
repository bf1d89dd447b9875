"""SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463): one type, both directions.

The server engine serialises `Reply` objects; the downstream client parses them back with
`ReplyParser`. Text is restricted to printable ASCII so that nothing an attacker or a downstream
server said can smuggle a line break into a reply.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")

MAX_REPLY_LINE = 512
"""RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF."""


def clean_text(text: str, limit: int = 400) -> str:
    """Make `text` safe for a reply line: printable ASCII only, bounded length."""
    if text.isascii() and text.isprintable():  # the usual case, without the regex
        return text[:limit]
    return _UNPRINTABLE.sub("?", text)[:limit]


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a three-digit code, an optional enhanced code and one or more text lines."""

    code: int
    enhanced: str | None
    lines: tuple[str, ...]
    _wire: bytes = field(default=b"", init=False, repr=False, compare=False)
    """`to_bytes()`, made on first use: constant replies are serialised once."""

    def __post_init__(self) -> None:
        if not _status_fits(self.code, self.enhanced):
            if not 200 <= self.code <= 599:
                raise ValueError(f"reply code out of range: {self.code}")
            raise ValueError(f"enhanced status {self.enhanced!r} does not fit code {self.code}")
        if not self.lines:
            raise ValueError("a reply needs at least one line")

    @property
    def positive(self) -> bool:
        return self.code < 400

    @property
    def transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def to_bytes(self) -> bytes:
        """Serialise; the enhanced code prefixes every line (RFC 2034 §4)."""
        if self._wire:
            return self._wire
        prefix = f"{self.enhanced} " if self.enhanced else ""
        last = len(self.lines) - 1
        if not last:  # the usual reply: one line
            wire = f"{self.code} {prefix}{clean_text(self.lines[0])}\r\n".encode("ascii")
        else:
            wire = "".join(
                f"{self.code}{' ' if i == last else '-'}{prefix}{clean_text(line)}\r\n"
                for i, line in enumerate(self.lines)
            ).encode("ascii")
        object.__setattr__(self, "_wire", wire)  # a cache, not state: frozen all the same
        return wire

    def __str__(self) -> str:
        prefix = f"{self.enhanced} " if self.enhanced else ""
        return f"{self.code} {prefix}{self.text}"


@functools.lru_cache(maxsize=256)
def _status_fits(code: int, enhanced: str | None) -> bool:
    """Whether a code and an enhanced code make a valid pair: the same few pairs in nearly
    every reply, so checked (regex and all) once each."""
    if not 200 <= code <= 599:
        return False
    return enhanced is None or (
        _ENHANCED.match(enhanced) is not None and enhanced[0] == str(code)[0]
    )


def reply(code: int, enhanced: str | None, *lines: str) -> Reply:
    return Reply(code, enhanced, tuple(lines))


class ReplyError(Exception):
    """A peer sent something that is not a well-formed SMTP reply."""


class ReplyParser:
    """Incremental parser for replies sent by a server (used by the downstream client).

    Bounded: a line longer than `MAX_LINE` (4 x `MAX_REPLY_LINE`, tolerance for servers that
    overrun RFC 5321's 512 octets) or a reply of more than `max_lines` lines is an error, so a
    broken downstream cannot make the client buffer without limit.
    """

    MAX_LINE = MAX_REPLY_LINE * 4
    """Longest reply line accepted, CRLF included."""

    def __init__(self, max_lines: int = 100) -> None:
        self._buf = b""  # an unfinished line (at most MAX_LINE octets)
        self._lines: list[str] = []
        self._code: int | None = None
        self._max_lines = max_lines

    def feed(self, data: bytes) -> list[Reply]:
        buf = self._buf + data if self._buf else data
        replies: list[Reply] = []
        start = 0  # what is before was parsed
        while (end := buf.find(b"\r\n", start)) >= 0:
            if end + 2 - start > self.MAX_LINE:  # the same bound when the line came in one read
                raise ReplyError("reply line too long")
            line = buf[start:end]
            start = end + 2
            if self._code is None and line[3:4] != b"-" and len(line) <= _SHORT_LINE:
                replies.append(_one_line(line))  # the usual reply: one short line
                continue
            code, sep = _head(line)
            if self._code is not None and code != self._code:
                raise ReplyError("reply code changed inside a multi-line reply")
            self._code = code
            self._lines.append(line[4:].decode("utf-8", "replace"))
            if len(self._lines) > self._max_lines:
                raise ReplyError("too many lines in one reply")
            if sep != b"-":
                replies.append(_build(code, self._lines))
                self._lines = []
                self._code = None
        self._buf = buf[start:]
        if len(self._buf) > self.MAX_LINE:
            raise ReplyError("reply line too long")
        return replies


def _head(line: bytes) -> tuple[int, bytes]:
    """The code of a reply line and what follows it: b" ", b"-", or b"" for a bare code."""
    head, sep = line[:3], line[3:4]
    if not (len(head) == 3 and head.isdigit() and b"2" <= head[:1] <= b"5"):
        raise ReplyError(f"malformed reply line: {line[:80]!r}")
    if sep not in (b" ", b"-", b""):
        raise ReplyError(f"malformed reply line: {line[:80]!r}")
    return int(head), sep


_SHORT_LINE = 128
"""Longest reply line (CRLF not counted) that `_one_line` keeps (256 of them at most)."""


@functools.lru_cache(maxsize=256)
def _one_line(line: bytes) -> Reply:
    """A complete one-line reply. A downstream server says the same few every transaction
    (`250 2.1.0 Ok`, `354 ...`): each is parsed, checked and serialised once. A malformed
    line raises, and is not kept."""
    code, _ = _head(line)
    return _build(code, [line[4:].decode("utf-8", "replace")])


def _build(code: int, lines: list[str]) -> Reply:
    """Split an enhanced status code off the first line when it is there and fits the code."""
    enhanced = None
    first, _, rest = lines[0].partition(" ")
    if _ENHANCED.match(first) and first[0] == str(code)[0]:
        enhanced = first
        stripped = [rest]
        for line in lines[1:]:
            head, _, tail = line.partition(" ")
            stripped.append(tail if head == first else line)
        lines = stripped
    return Reply(code, enhanced, tuple(map(clean_text, lines)) or ("",))
