"""The author domains DMARC evaluates, from the From fields of a real header scan (RFC 7489
6.6.1): every address's domain, U-labels as A-labels, a bound on how many, and no way to make
a From that names a domain yield none."""

from __future__ import annotations

import pytest

from mailmoat.headers import scan
from mailmoat.policy.dmarc import MAX_AUTHOR_DOMAINS, MAX_FROM_FIELD, author_domains
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
        # no domain at all: nothing to evaluate, refused (test_dmarc_unreadable.py)
        ("root", []),
        ("undisclosed-recipients:;", []),
    ],
)
def test_author_domains(from_value: str, domains: list[str]) -> None:
    assert authors(from_value) == domains


def test_several_from_fields_all_count() -> None:
    assert authors("a@a.example", "b@b.example", "c@a.example") == ["a.example", "b.example"]


def test_author_domains_stop_one_past_the_bound() -> None:
    """Enough to know that there are more than are evaluated; a huge From costs no more
    (past `MAX_FROM_FIELD` it is not parsed at all: test_dmarc_unreadable.py)."""
    many = ", ".join(f"x@d{i}.example" for i in range(200))
    assert len(many) < MAX_FROM_FIELD
    got = authors(many)
    assert got == [f"d{i}.example" for i in range(MAX_AUTHOR_DOMAINS + 1)]
    spread = [f"x@d{i}.example" for i in range(MAX_AUTHOR_DOMAINS + 3)]
    assert len(authors(*spread)) == MAX_AUTHOR_DOMAINS + 1


@pytest.mark.parametrize(
    "from_value",
    [
        "CEO <ceo@sender.test\u202e>",  # right-to-left override after the domain
        "CEO <ceo@sender.test\u061c>",  # Arabic letter mark
        "CEO <ceo@sender.test\U000e0001>",  # language tag
        "CEO <ceo@sender.test\ufff9>",  # interlinear annotation anchor
        "CEO <ceo@=?utf-8?q?sender.test?=>",  # an encoded word where a domain must be
        "CEO <ceo@sender..test>",
        "ceo@" + "a" * 64 + ".test",  # a label longer than 63
    ],
)
async def test_an_author_domain_that_is_no_domain_name_fails_under_reject(
    from_value: str,
) -> None:
    """A reader shows `ceo@sender.test` for these, but their lookup would find no policy
    (IDNA 2003 even encodes `test` + U+061C as a valid-looking `xn--test-j4f`): they are no
    domain names, a failure under reject (permerror), never none, with or without the idna
    package beside dnspython."""
    from mailmoat.policy.dmarc import _refusal, evaluate_authors
    from tests.policy.test_dmarc_corpus import TableResolver

    domains = authors(from_value)
    assert domains, from_value
    dns = TableResolver({"_dmarc.sender.test": (b"v=DMARC1; p=reject",)})
    result = await evaluate_authors(dns, domains, None, [])  # type: ignore[arg-type]
    assert (result.result, result.disposition) == ("permerror", "reject"), result
    assert _refusal(result).code == 550
    assert "not a valid domain name" in _refusal(result).text


@pytest.mark.parametrize("from_value", ["a@bank.example", "a@[192.0.2.1]", "a@_dmarc.example"])
def test_valid_author_domains_are_not_refused_as_invalid(from_value: str) -> None:
    from mailmoat.policy.dmarc import _without_policy

    assert _without_policy(authors(from_value)) is None
