"""The bytes the downstream client writes from a `Message`: envelope addresses that cannot break
out of `<...>`, and dot-stuffed content (RFC 5321 4.5.2) with its end-of-data indicator."""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailmoat.relay.client_errors import InternalError

_NEEDS_A_LOOK = re.compile(r'[\x00-\x1f\x7f<> "\\]')
"""What `check_quoting` looks at; the usual address has none of it."""


def envelope_address(address: str, utf8: bool) -> bytes:
    """An envelope address for MAIL/RCPT. The session validated it already; this only makes
    sure that it cannot break out of `<...>` (a line break, or a '>' or space outside quotes
    that would add a parameter), whatever happened upstream."""
    if _NEEDS_A_LOOK.search(address) is not None:
        check_quoting(address)
    try:
        return address.encode("utf-8" if utf8 else "ascii")
    except UnicodeEncodeError:
        raise InternalError("non-ASCII envelope address without SMTPUTF8") from None


def check_quoting(address: str) -> None:
    quoted = escaped = False
    for c in address:
        if ord(c) < 0x20 or ord(c) == 0x7F:
            raise InternalError("control character in envelope address")
        if escaped:
            escaped = False
        elif quoted and c == "\\":
            escaped = True
        elif c == '"':
            quoted = not quoted
        elif not quoted and c in "<> ":
            raise InternalError(f"{c!r} outside quotes in envelope address")
    if quoted:
        raise InternalError("unterminated quoted string in envelope address")


class DotStuffer:
    """Transparency (RFC 5321 §4.5.2) for content whose lines all end in CRLF, chunk by chunk."""

    def __init__(self) -> None:
        self._line_start = True
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        # memchr first: a chunk with no dot at all (base64, say) needs no search
        out = chunk.replace(b"\n.", b"\n..") if b"." in chunk else chunk
        if self._line_start and out[:1] == b".":
            out = b"." + out
        self._line_start = chunk.endswith(b"\n")
        self._tail = chunk[-2:] if len(chunk) >= 2 else (self._tail + chunk)[-2:]
        return out

    def end(self) -> bytes:
        """The end-of-data indicator, preceded by a CRLF if the content did not end in one."""
        if self._tail in (b"", b"\r\n"):
            return b".\r\n"
        return b"\r\n.\r\n"


def stuff(chunks: Iterator[bytes]) -> bytes:
    """Dot-stuff a whole message and terminate it (convenience for small messages and tests)."""
    s = DotStuffer()
    return b"".join(s.feed(c) for c in chunks) + s.end()
