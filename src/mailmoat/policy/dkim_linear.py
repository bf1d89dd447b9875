"""dkimpy's regular expressions that backtrack quadratically, replaced by linear ones with the
same matches (dkimpy 1.1.8; the tests compare each with dkimpy's own).

Each one failed on attacker-chosen runs of white space by trying again from every character
of the run and taking the rest of it each time (n²/2 steps), the CPU of a worker thread that
holds the GIL:

* the relaxed body canonicalization strips the blanks before each CRLF with
  `re.sub(b"[\\t ]+\\r\\n", ...)`: a 1 MB body of 998-octet lines of blanks and a letter took
  3.6 s per relaxed signature (ordinary text: 0.1 s); now 36 ms;
* `RE_BTAG` (the b= value taken out of the signature field before it is hashed) spells
  folding white space `(?:(?:\\s*\\r?\\n)?\\s+)?`, which matches any run of white space in
  many ways: " b" and 8,000 folded empty lines cost 5.5 s;
* the check that b= is base64, `[\\s0-9A-Za-z+/]+[\\s=]*$`, run twice when the parsed signature
  is validated: a b= of a letter, 8,000 blanks and a "!" cost 0.44 s each, 64 KiB 28 s.

Its message parse, `rfc822_parse`, grew each folded header field by `+=` on bytes (a copy of
the field per continuation line: 85,000 of them in a 255 KB header block cost 0.46 s) and
split the whole body into a list of line objects to join them again (10 MiB of 3-octet lines:
330 MiB of memory, 33 times the body). The replacement splits the header block only, keeps a
field's lines in a list, and returns the body as one slice, its line breaks made CRLF only
when some are not.

`install()` replaces these three, which dkimpy looks up in its module namespaces;
`bad_b_value` is checked before dkimpy's validation runs, with dkimpy's reason (its regex
only ever sees a value that matches, which costs it one pass). Each new pattern takes a run
of white space whole (possessive), and starts one only where no blank precedes it.
"""

from __future__ import annotations

import re

import dkim
import dkim.canonicalization

DKIMPY_STRIP = dkim.canonicalization.strip_trailing_whitespace
DKIMPY_BTAG = dkim.RE_BTAG
DKIMPY_PARSE = dkim.rfc822_parse
"""dkimpy's own (the tests compare them)."""

_TRAILING_BLANKS = re.compile(rb"(?<![\t ])[\t ]++\r\n")
RE_BTAG = re.compile(rb"([;\s]b\s*+=)(?:\s*+[a-zA-Z0-9+/=])*(?:\r?\n\Z)?")
"""dkimpy's, with its folding white space `(?:(?:\\s*\\r?\\n)?\\s+)?` written as what it
matches, any run of white space (`\\s*`), taken whole."""
_BASE64 = re.compile(rb"[\s0-9A-Za-z+/]++[\s=]*$")
_FIELD_NAME = re.compile(rb"([\x21-\x7e]+?):")


def strip_trailing_whitespace(content: bytes) -> bytes:
    """`content` with the blanks (SP, HTAB) before each CRLF removed."""
    return _TRAILING_BLANKS.sub(b"\r\n", content)


def bad_b_value(value: bytes) -> str:
    """Why dkimpy refuses a b= value as not base64 (its words, the value cut); "" when its
    pattern accepts the value."""
    if _BASE64.match(value) is None:
        return f"b= value is not valid base64 ({value[:40]!r})"
    return ""


def rfc822_parse(message: bytes) -> tuple[list[list[bytes]], bytes]:
    """dkimpy's: ([name, value] of each header field, the value with its CRLFs; the body with
    each line break CRLF), lines ending in CRLF or LF; MessageFormatError (or IndexError, for
    a first line that continues no field) where dkimpy raises it."""
    headers: list[list[bytes]] = []
    parts: list[list[bytes]] = []  # the lines of each field's value, joined at the end
    pos, size = 0, len(message)
    body = b""
    while pos <= size:
        lf = message.find(b"\n", pos)
        end = size if lf < 0 else lf
        line = message[pos : end - 1 if lf > pos and message[lf - 1] == 0x0D else end]
        pos = size + 1 if lf < 0 else lf + 1
        if not line:
            if pos <= size:
                body = message[pos:]
                if body.count(b"\n") != body.count(b"\r\n"):
                    body = body.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
            break
        if line[0] in (0x09, 0x20):
            parts[-1].append(line + b"\r\n")
            continue
        m = _FIELD_NAME.match(line)
        if m is not None:
            parts.append([line[m.end(0) :] + b"\r\n"])
            headers.append([m.group(1), b""])
        elif not line.startswith(b"From "):
            raise dkim.MessageFormatError(f"Unexpected characters in RFC822 header: {line!r}")
    for field, lines in zip(headers, parts, strict=True):
        field[1] = b"".join(lines)
    return headers, body


def install() -> None:
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
    dkim.RE_BTAG = RE_BTAG
    dkim.rfc822_parse = rfc822_parse
