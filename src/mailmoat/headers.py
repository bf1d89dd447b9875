"""Find header fields in a spooled message without parsing (or copying) the whole message.

The scan reads the header block line by line (lines end in CRLF: the engine guarantees it) and
keeps only the fields asked for, each with its byte range in the spooled content, so a check can
read them (From for DMARC) or leave them out on delivery (forged Authentication-Results).
Bounded: at most `MAX_KEPT` fields of each name are kept (all are counted), each at most
`MAX_FIELD` octets of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

MAX_KEPT = 100
MAX_FIELD = 64 * 1024

_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(frozen=True, slots=True)
class HeaderField:
    name: str
    """Lower case."""
    raw: bytes
    """The field as sent, name to final CRLF (at most MAX_FIELD octets of it)."""
    start: int
    end: int

    @property
    def value(self) -> str:
        """The unfolded text after the colon."""
        text = self.raw.split(b":", 1)[1] if b":" in self.raw else b""
        return re.sub(r"\r\n([ \t])", r"\1", text.decode("utf-8", "replace")).strip()


@dataclass(slots=True)
class Headers:
    fields: dict[str, list[HeaderField]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """How many fields of each wanted name the message has (kept or not)."""
    size: int = 0
    """Octets of the header block, the empty line included when there is one."""
    strict: bool = True
    """Every line of the block is a field ("name:" with no space before the colon) or the
    continuation of one, up to the empty line or the end: a parser such as dkimpy's sees
    exactly these fields, and no others."""

    def get(self, name: str) -> list[HeaderField]:
        return self.fields.get(name, [])


def scan(chunks: Iterable[bytes], wanted: Iterable[str]) -> Headers:
    """The wanted fields of the header block at the start of `chunks` (lines end in CRLF and
    are bounded by smtp.max_text_line, so one line at a time is held)."""
    want = frozenset(w.lower().encode("ascii") for w in wanted)
    out = Headers()
    fields, counts = out.fields, out.counts
    offset = 0  # where the line at `pos` starts in the content
    buf = b""
    pos = 0  # where the next line starts in `buf`
    in_field = False
    current: tuple[str, int, bytearray] | None = None  # a wanted field: (name, start, raw)

    def finish(end: int) -> None:
        assert current is not None
        name, start, raw = current
        counts[name] = counts.get(name, 0) + 1
        kept = fields.setdefault(name, [])
        if len(kept) < MAX_KEPT:
            kept.append(HeaderField(name, bytes(raw), start, end))

    for chunk in chunks:
        buf = buf[pos:] + chunk if buf else chunk
        pos = 0
        while (eol := buf.find(b"\r\n", pos)) >= 0:
            line, start = buf[pos : eol + 2], offset
            pos = eol + 2
            offset += len(line)
            first = line[0]
            if in_field and (first == 0x20 or first == 0x09):  # a continuation line
                if current is not None and len(current[2]) < MAX_FIELD:
                    current[2].extend(line[: MAX_FIELD - len(current[2])])
                continue
            if current is not None:
                finish(start)
                current = None
            m = _NAME.match(line)
            if m is None:  # the empty line, or body text without one: the header ends
                if line == b"\r\n":
                    out.size = offset
                else:
                    out.size, out.strict = start, False
                return out
            in_field = True
            name = m.group(1)
            if line[len(name)] != 0x3A:  # white space before the colon
                out.strict = False
            name = name.lower()
            if name in want:
                current = (name.decode("ascii"), start, bytearray(line[:MAX_FIELD]))
    if current is not None:
        finish(offset)
    out.size = offset
    return out
