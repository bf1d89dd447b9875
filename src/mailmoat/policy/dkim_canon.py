"""dkimpy's relaxed body canonicalization in linear time, same octets.

dkimpy 1.1.8 removes the white space at the end of each body line (RFC 6376 3.4.4) with
`re.sub(b"[\\t ]+\\r\\n", b"\\r\\n", body)`. In a run of blanks that no CRLF follows, the regex
tries again from every blank of the run, and each try takes the rest of the run before it
fails: a line of n blanks and a letter costs n²/2 steps. A 1 MB body of such 998-octet lines
took 3.6 s of CPU for each relaxed signature (ordinary text: 0.1 s), and a message may carry
`dkim.max_signatures` of them on a 25 MiB body.

`install()` replaces the function, which `Relaxed.canonicalize_body` looks up in its module
namespace, by one whose run may start only after a character that is not a blank and is taken
whole (a possessive match): one try per run, the same matches, the same result for every body.
"""

from __future__ import annotations

import re

import dkim.canonicalization

DKIMPY = dkim.canonicalization.strip_trailing_whitespace
"""dkimpy's own function (the tests compare the two)."""

_TRAILING_BLANKS = re.compile(rb"(?<![\t ])[\t ]++\r\n")


def strip_trailing_whitespace(content: bytes) -> bytes:
    """`content` with the blanks (SP, HTAB) before each CRLF removed."""
    return _TRAILING_BLANKS.sub(b"\r\n", content)


def install() -> None:
    dkim.canonicalization.strip_trailing_whitespace = strip_trailing_whitespace
