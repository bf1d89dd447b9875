"""The author domains DMARC evaluates, from the From fields of a real header scan (RFC 7489
6.6.1): every address's domain, U-labels as A-labels, a bound on how many, and no way to make
a From that names a domain yield none."""

from __future__ import annotations

import pytest

from mailmoat.headers import scan
from mailmoat.policy.dmarc import MAX_AUTHOR_DOMAINS, author_domains
from mailmoat.policy.score import HEADERS_WANTED


def authors(*froms: str) -> list[str]:
    head = "".join(f"From: {f}\r\n" for f in froms) + "Subject: x\r\n\r\nbody\r\n"
    return author_domains(scan([head.encode()], HEADERS_WANTED))


@pytest.mark.parametrize(
    ("from_value", "domains"),
    [
        ("Alice <a@example.com>", ["example.com"]),
        ("a@Example.COM.", ["example.com"]),
        ("A <a@a.example>, B <b@b.example>, C <c@a.example>", ["a.example", "b.example"]),
        ("group: a@a.example, b@b.example;", ["a.example", "b.example"]),
        ("=?utf-8?q?Bj=C3=B6rn?= <b@example.com>", ["example.com"]),
        # the display name is not an author (DMARC is about the address)
        ('"a@bank.example" <x@evil.example>', ["evil.example"]),
        # U-labels become A-labels, as DKIM d= and SPF domains are (6.6.1)
        ("J <j@b\u00fccher.example>", ["xn--bcher-kva.example"]),
        ("j@B\u00dcCHER.example", ["xn--bcher-kva.example"]),
        # forms the address parser makes nothing of: every domain after an "@" counts
        ("x@evil.example <a@bank.example>", ["evil.example", "bank.example"]),
        ("alice@evil.example)<bob@bank.example>", ["evil.example", "bank.example"]),
        ("<a@bank.example> (c) x@evil.example", ["bank.example", "evil.example"]),
        ("a@bank.example@evil.example", ["bank.example", "evil.example"]),
        ('a@"bank.example"', ["bank.example"]),
        ("a@[bank.example]", ["bank.example"]),
        # no domain at all: nothing to evaluate (6.6.1 leaves these to the receiver)
        ("root", []),
        ("undisclosed-recipients:;", []),
    ],
)
def test_author_domains(from_value: str, domains: list[str]) -> None:
    assert authors(from_value) == domains


def test_several_from_fields_all_count() -> None:
    assert authors("a@a.example", "b@b.example", "c@a.example") == ["a.example", "b.example"]


def test_author_domains_stop_one_past_the_bound() -> None:
    """Enough to know that there are more than are evaluated; a huge From costs no more."""
    many = ", ".join(f"x@d{i}.example" for i in range(500))
    got = authors(many)
    assert got == [f"d{i}.example" for i in range(MAX_AUTHOR_DOMAINS + 1)]
    spread = [f"x@d{i}.example" for i in range(MAX_AUTHOR_DOMAINS + 3)]
    assert len(authors(*spread)) == MAX_AUTHOR_DOMAINS + 1
