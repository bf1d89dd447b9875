"""Find header fields in a spooled message without parsing (or copying) the whole message.

The scan reads the header block line by line (lines end in CRLF: the engine guarantees it) and
keeps only the fields asked for, each with its byte range in the spooled content, so a check can
read them (From for DMARC) or leave them out on delivery (forged Authentication-Results).
Bounded: at most `MAX_KEPT` fields of each name are kept (all are counted), each at most
`MAX_FIELD` octets of it; a block with more fields of a wanted name than that has a defect.

The scan also says whether the header block is one that every parser reads alike (`defect`):
each line, up to the empty line or the end of the content, a field ("name:", the name RFC 5322
ftext, no white space before the colon) or the continuation of one. Parsers disagree on every
other shape: a first line that starts with white space continues the field before it (in the
delivered message, mailmoat's own trace field); Postfix reads "Subject : x" as a field and ends
the header at a line with no colon, Python's `email` ends it at the first and reads on past a
":x" or an mbox "From " line, Dovecot takes a line with no colon for a field. A message whose
header block has a defect is refused (`session`), so the fields mailmoat inspects are the ones
the internal server sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import chain

from mailmoat.limits import HEADER_MAX_FIELD as MAX_FIELD
from mailmoat.limits import HEADER_MAX_KEPT as MAX_KEPT

WANTED = ("from", "authentication-results", "dkim-signature")
"""The header fields mailmoat reads: From (DMARC), Authentication-Results (forged ones
removed), DKIM-Signature (none: no DKIM work at all)."""


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
    defect: str = ""
    """What is wrong with the first line of the block that is neither a field ("name:" with no
    space before the colon) nor the continuation of one ("header line 3 is not a header field
    (no colon)"); "" when every line up to the empty line or the end is one."""
    too_big: bool = False
    """The header block is longer than the scan's limit (`defect` says so); the scan stopped
    there, keeping nothing past it."""

    @property
    def strict(self) -> bool:
        """No defect: a parser such as dkimpy's (or the internal server's) sees exactly these
        fields, and no others."""
        return not self.defect

    def get(self, name: str) -> list[HeaderField]:
        return self.fields.get(name, [])


@lru_cache(maxsize=16)
def _names(wanted: tuple[str, ...]) -> frozenset[bytes]:
    return frozenset(w.lower().encode("ascii") for w in wanted)


_NAME_CHARS = bytes(c for c in range(0x21, 0x7F) if c != 0x3A)
"""What a field name is made of (RFC 5322 ftext)."""

_STRICT_FIELDS = re.compile(rb"(?:[\x21-\x39\x3b-\x7e]+:[^\n]*\r\n(?:[ \t][^\n]*\r\n)*)*")
"""Lines that are all fields ("name:", no space before the colon) or their continuations,
each ending in CRLF (and holding no other LF)."""


def _defect(number: int, line: bytes) -> str:
    """Why line `number` (1 for the first) is not a field, in a few words."""
    if line[:1] in (b" ", b"\t"):
        what = "starts with white space but continues no field"
    elif line.startswith(b"From "):
        what = 'is an mbox "From " line'
    elif b":" not in line:
        what = "is not a header field (no colon)"
    elif line.startswith(b":"):
        what = "has an empty field name"
    else:
        what = "has a field name with characters RFC 5322 does not allow"
    return f"header line {number} {what}"


def _keep(out: Headers, name: str, raw: bytes, start: int, end: int) -> None:
    if end - start > MAX_FIELD and not out.defect:
        # the checks would read a cut field (an authserv-id or a From address past the cut)
        out.defect = f"a {name} header field longer than {MAX_FIELD} octets"
    out.counts[name] = out.counts.get(name, 0) + 1
    kept = out.fields.setdefault(name, [])
    if len(kept) < MAX_KEPT:
        kept.append(HeaderField(name, raw, start, end))


def scan(chunks: Iterable[bytes], wanted: Iterable[str], limit: int | None = None) -> Headers:
    """The wanted fields of the header block at the start of `chunks` (lines end in CRLF and
    are bounded by smtp.max_text_line, so one line at a time is held).

    `limit`: the most octets of fields (the empty line after them not counted) the block may
    have; past it the scan stops (`too_big`), so what it keeps is bounded by the limit plus
    one chunk, whatever the message.

    A strict block that the first chunk holds whole takes one regex match and a search per
    wanted name (`_whole`). Any other is read by `_lines`: each chunk cut after its last CRLF
    (or after the empty line, when it holds one) and that block split into lines at once, a
    field's bytes sliced from its block when it ends."""
    want = _names(tuple(wanted))
    chunks = iter(chunks)
    first = next(chunks, b"")
    out = _whole(first, want, limit)
    if out is None:
        out = _lines(chain((first,), chunks), want, limit)
    if not out.defect and out.counts and max(out.counts.values()) > MAX_KEPT:
        # the checks would not see them all (a From for DMARC past the ones kept)
        name = max(out.counts, key=out.counts.__getitem__)
        out.defect = f"more than {MAX_KEPT} {name} header fields"
    return out


def _whole(chunk: bytes, want: frozenset[bytes], limit: int | None) -> Headers | None:
    """The scan of a strict header block that `chunk` holds whole (as nearly every first
    chunk does), from one regex match and a search for each wanted name; None for any
    other, left to `_lines`."""
    end = chunk.find(b"\r\n\r\n") + 2  # the fields end here, the empty line follows
    if end < 2 or (limit is not None and end > limit):
        return None
    block = chunk[:end]
    if _STRICT_FIELDS.fullmatch(block) is None:
        return None
    out = Headers(size=end + 2)
    low = b"\n" + block.lower()  # low[i] is block[i - 1]: a field starts after each LF
    for name in want:
        key = b"\n" + name + b":"
        at = low.find(key)
        if at < 0:
            continue
        text = name.decode("ascii")
        while at >= 0:  # the field starts at block[at]
            stop = block.find(b"\r\n", at) + 2
            while stop < end and (block[stop] == 0x20 or block[stop] == 0x09):
                stop = block.find(b"\r\n", stop) + 2
            _keep(out, text, block[at : min(stop, at + MAX_FIELD)], at, stop)
            at = low.find(key, stop)
    return out


def _too_big(out: Headers, limit: int) -> Headers:
    out.defect, out.too_big = f"header block larger than {limit} octets", True
    return out


def _lines(chunks: Iterable[bytes], want: frozenset[bytes], limit: int | None) -> Headers:
    """The scan of any header block, one chunk at a time."""
    out = Headers()
    base = 0  # where `block` starts in the content
    number = 0  # lines of the content before `block`
    rest = b""  # an unfinished line, carried over to the next chunk
    in_field = False
    name = ""  # the wanted field being read ("" for none): its name,
    start = 0  # where it starts in the content,
    at = 0  # where it starts in `block`,
    head = b""  # and what of it earlier blocks held (MAX_FIELD octets at most)
    for chunk in chunks:
        buf = rest + chunk if rest else chunk
        cut = buf.find(b"\r\n\r\n") + 4  # the block ends at the empty line: no rest
        if cut < 4:
            cut = buf.rfind(b"\r\n") + 2
            if cut < 2:
                rest = buf
                continue
            rest = buf[cut:]
        block = buf[:cut]
        pos = 0  # where `line` starts in `block`
        lines = block.split(b"\r\n")
        lines.pop()  # after the final CRLF
        for i, line in enumerate(lines):
            if in_field and line and (line[0] == 0x20 or line[0] == 0x09):  # continuation
                pos += len(line) + 2
                continue
            if name:
                raw = head + block[at : min(pos, at + MAX_FIELD - len(head))]
                _keep(out, name, raw, start, base + pos)
                name, head = "", b""
            label, colon, _ = line.partition(b":")
            field_name = label.rstrip(b" \t")
            if not colon or not field_name or field_name.translate(None, _NAME_CHARS):
                # the empty line, or body text without one: the header ends
                if line:
                    out.size = base + pos
                    out.defect = out.defect or _defect(number + i + 1, line)
                else:
                    out.size = base + pos + 2
                return out if limit is None or base + pos <= limit else _too_big(out, limit)
            in_field = True
            if len(field_name) != len(label) and not out.defect:
                out.defect = f"header line {number + i + 1} has white space before the colon"
            field_name = field_name.lower()
            if field_name in want:
                name, start, at = field_name.decode("ascii"), base + pos, pos
            pos += len(line) + 2
        if name:
            head += block[at : at + MAX_FIELD - len(head)]
            at = 0
        base += cut
        number += len(lines)
        if limit is not None and base > limit:  # every line so far is a field or a continuation
            out.size = base
            return _too_big(out, limit)
    if name:
        _keep(out, name, head, start, base)
    out.size = base
    return out
