"""DMARC records (RFC 7489 6.3, 6.4): which TXT records are DMARC records, and the policy one
gives.

Decisions where the RFC leaves room (each has cases in tests/policy/dmarc_corpus.py):

* A DMARC record is a TXT record whose first tag is `v` with the value `DMARC1` exactly (6.3:
  "MUST match precisely"; the ABNF of 6.4 spells it in case-sensitive %x codes). Space and tab
  around the tag and the `=` are allowed (6.4 `*WSP`); `v=DMARC10`, `v=dmarc1` or a record
  whose first tag is another one are not DMARC records and are discarded (6.6.3 steps 2, 4).
* Tag names and keyword values (`p=Reject`, `ADKIM=S`) compare without case: the ABNF of 6.4
  writes them as quoted strings, which RFC 5234 2.3 makes case-insensitive.
* `p` may come anywhere after `v` (6.3: both present, "in that order").
* A tag named twice makes the record invalid (6.3 adopts DKIM's tag-value syntax; RFC 6376
  3.2: "the entire tag-list is invalid"): the domain then has no DMARC policy.
* A tag with a syntax error (a non-ASCII byte, no `=`, a bad name, a value outside its
  grammar) is ignored, the rest of the record stands (6.3: "Syntax errors in the remainder of
  the record SHOULD be discarded in favor of default values"): `adkim`/`aspf` become `r`,
  `pct` 100; an invalid `p`, or a present but invalid `sp`, is 6.6.3 step 6: `p=none` (for
  subdomains too) when `rua` holds a valid reporting URI, else no policy at all.
* A valid reporting URI is a `mailto:` URI with an address, optionally followed by a size
  limit (`!10m`, 6.4 `dmarc-uri`): mailto is the one scheme every receiver must implement
  (6.2), and the only one we would accept as a report destination.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from mailmoat.limits import DMARC_CACHED_LENGTH as CACHED_LENGTH
from mailmoat.limits import DMARC_RECORDS_KEPT as RECORDS_KEPT

POLICIES = ("none", "quarantine", "reject")


_WSP = b" \t"
_VERSION = re.compile(rb"[ \t]*[vV][ \t]*=[ \t]*DMARC1[ \t]*(?:;|\Z)")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_PCT = re.compile(r"[0-9]{1,3}")
_SIZE = re.compile(r"![0-9]+[kmgtKMGT]?\Z")
_MAILTO = re.compile(
    r"[mM][aA][iI][lL][tT][oO]:"
    r"(?:[A-Za-z0-9.!#$&'*+/=^_`{|}~-]|%[0-9A-Fa-f]{2})+"  # local part (RFC 6068, no ,;)
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?"  # domain
    r"(?:\?[\x21-\x7e]*)?"  # header fields
)


@dataclass(frozen=True, slots=True)
class Record:
    p: str
    sp: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100


def is_dmarc(text: bytes) -> bool:
    """A TXT record that starts with the tag `v=DMARC1` (RFC 7489 6.6.3 steps 2 and 4)."""
    return _VERSION.match(text) is not None


def parse_record(text: bytes) -> Record | None:
    """The policy a DMARC record gives; None when `text` is not a DMARC record or one that
    gives no policy (an invalid `p`/`sp` without a valid `rua`, or a tag named twice)."""
    return _parse(text) if len(text) <= CACHED_LENGTH else _parse.__wrapped__(text)


@lru_cache(maxsize=RECORDS_KEPT)
def _parse(text: bytes) -> Record | None:
    if not is_dmarc(text):
        return None
    tags: dict[str, str | None] = {}
    """tag name (lower case) -> value, None for a value with a non-ASCII byte."""
    for part in text.split(b";")[1:]:
        name_b, eq, value_b = part.partition(b"=")
        try:
            name = name_b.strip(_WSP).decode("ascii")
        except UnicodeDecodeError:
            continue  # not a tag we could name: ignored
        if not eq or not _NAME.fullmatch(name):
            continue  # empty (a trailing ";") or not a tag: ignored
        name = name.lower()
        if name in tags or name == "v":
            return None  # a tag named twice: the record is invalid (RFC 6376 3.2)
        try:
            tags[name] = value_b.strip(_WSP).decode("ascii")
        except UnicodeDecodeError:
            tags[name] = None  # this tag is ignored, as if invalid
    p = _keyword(tags.get("p"), POLICIES)
    sp = _keyword(tags.get("sp", p), POLICIES)
    if p is None or sp is None:  # 6.6.3 step 6
        if not valid_rua(tags.get("rua")):
            return None
        p = sp = "none"
    pct = tags.get("pct")
    return Record(
        p=p,
        sp=sp,
        adkim=_keyword(tags.get("adkim"), ("r", "s")) or "r",
        aspf=_keyword(tags.get("aspf"), ("r", "s")) or "r",
        pct=int(pct) if pct is not None and _PCT.fullmatch(pct) and int(pct) <= 100 else 100,
    )


def _keyword(value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    value = value.lower()
    return value if value in allowed else None


def valid_rua(value: str | None) -> bool:
    """At least one syntactically valid reporting URI in a `rua` value (6.4 `dmarc-uri`,
    comma-separated, space and tab around the commas)."""
    if not value:
        return False
    for uri in value.split(","):
        uri = _SIZE.sub("", uri.strip(" \t"))
        if _MAILTO.fullmatch(uri):
            return True
    return False
