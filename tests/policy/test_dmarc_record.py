"""Properties of DMARC record parsing (RFC 7489 6.3) over generated input: any bytes give a
policy or none without an error, and a tag the evaluator does not use, whatever it holds
(non-ASCII bytes, '=' signs, nothing), never changes the policy."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.policy.dmarc_record import POLICIES, is_dmarc, parse_record

USED = {"v", "p", "sp", "adkim", "aspf", "pct", "rua"}
BASE = [b"v=DMARC1", b"p=reject", b"sp=quarantine", b"adkim=s", b"pct=40"]

names = st.from_regex(r"[A-Za-z][A-Za-z0-9_]{0,8}", fullmatch=True).filter(
    lambda n: n.lower() not in USED
)
values = st.binary(max_size=40).filter(lambda b: b";" not in b)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_policy_or_none(text: bytes) -> None:
    record = parse_record(text)
    if record is None:
        return
    assert is_dmarc(text)
    assert record.p in POLICIES and record.sp in POLICIES
    assert record.adkim in ("r", "s") and record.aspf in ("r", "s")
    assert 0 <= record.pct <= 100


@settings(max_examples=200, deadline=None)
@given(names, values, st.integers(min_value=1, max_value=len(BASE)))
def test_a_tag_not_used_never_changes_the_policy(name: str, value: bytes, at: int) -> None:
    expected = parse_record(b"; ".join(BASE))
    assert expected is not None
    parts = [*BASE[:at], name.encode() + b"=" + value, *BASE[at:]]
    assert parse_record(b"; ".join(parts)) == expected


@settings(max_examples=200, deadline=None)
@given(values, st.integers(min_value=1, max_value=len(BASE)))
def test_garbage_without_a_name_never_changes_the_policy(junk: bytes, at: int) -> None:
    """A part with no '=' (or a name that is not a tag name) is a syntax error, ignored."""
    if b"=" in junk:
        junk = junk.replace(b"=", b"")
    expected = parse_record(b"; ".join(BASE))
    parts = [*BASE[:at], junk, *BASE[at:]]
    assert parse_record(b"; ".join(parts)) == expected
