"""Parsed DKIM key records are kept only when short (`DKIM_CACHED_RECORD`): the sender's
domain chooses the record, a DNS answer holds up to 64 KiB, and `DKIM_KEYS_KEPT` of them kept
parsed (the record, its tags and p=) held 46 MiB. A long one is parsed for each use, with the
same answer."""

from __future__ import annotations

import base64
import tracemalloc

from mailmoat.limits import DKIM_CACHED_RECORD
from mailmoat.policy.dkim_rules import refusal

FIELDS = {b"a": b"rsa-sha256", b"h": b"from:to", b"b": b"AAAA"}


def _record(i: int, kind: bytes) -> bytes:
    p = base64.b64encode(i.to_bytes(4, "big") * 6000)  # 32 KB, no key dkimpy can read
    return b"v=DKIM1; k=" + kind + b"; n=" + b"x" * 8000 + b"; p=" + p


def test_long_key_records_are_not_kept_parsed() -> None:
    records = [_record(i, b"rsa") for i in range(64)]
    assert len(records[0]) > DKIM_CACHED_RECORD
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        answers = [refusal(FIELDS, r) for r in records]
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answers == [""] * 64  # a p= dkimpy cannot read is left to dkimpy (it fails it)
    assert held - before < 1024 * 1024, held - before  # kept parsed: 2.6 MB


def test_a_long_key_record_is_still_read() -> None:
    assert refusal(FIELDS, _record(1, b"ed25519")) == "key k=ed25519 does not sign a=rsa-sha256"
    assert refusal(FIELDS, _record(1, b"rsa").replace(b"v=DKIM1;", b"v=DKIM1; h=sha1;")) == (
        "key h=sha1 does not allow sha256"
    )
