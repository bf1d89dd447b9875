"""DMARC record promises that mutation testing (scripts/mutation over policy/dmarc_record.py)
found nothing holding: a record too long to be cached is parsed all the same (a long rua list)
and does not enter the cache, while a short one is kept; `pct` is 100 when it is absent or
invalid (so that the result of an unsampled policy is remembered, test_dns_auth.py)."""

from __future__ import annotations

from mailmoat.limits import DMARC_CACHED_LENGTH
from mailmoat.policy import dmarc_record
from mailmoat.policy.dmarc_record import Record, parse_record


def test_a_long_record_is_parsed_and_not_cached() -> None:
    rua = ",".join(f"mailto:dmarc{i}@reports.example" for i in range(40))
    long = f"v=DMARC1; p=quarantine; rua={rua}".encode()
    assert len(long) > DMARC_CACHED_LENGTH
    info = dmarc_record._parse.cache_info
    before = info()
    assert parse_record(long) == parse_record(long) == Record("quarantine", "quarantine")
    assert info() == before  # neither looked up nor kept
    # a short one is kept: the second parse is a cache hit
    short = b"v=DMARC1; p=reject; sp=none; pct=7; fo=1:d:s"
    assert parse_record(short) == parse_record(short) == Record("reject", "none", pct=7)
    assert info().hits == before.hits + 1


def test_pct_is_100_when_absent_or_invalid() -> None:
    for text in (
        b"v=DMARC1; p=reject",
        b"v=DMARC1; p=reject; pct=101",
        b"v=DMARC1; p=reject; pct=x",
    ):
        record = parse_record(text)
        assert record is not None and record.pct == 100, text
