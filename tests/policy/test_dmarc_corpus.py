"""The DMARC corpus (tests/policy/dmarc_corpus.py) against the evaluator, its DNS answers from a
table (no socket), and the properties the corpus must keep (several hundred cases, each with a
section of RFC 7489, unique names)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from mailmoat.dns import Answer, Status
from mailmoat.dns.resolver import normalise
from mailmoat.policy.dmarc import (
    MAX_AUTHOR_DOMAINS,
    combined,
    evaluate_authors,
    find_policy_now,
    judge,
)
from mailmoat.policy.results import DkimResult, SpfResult, SpfResults
from tests.policy.dmarc_corpus import CASES, TEMP, Case, Dns


class TableResolver:
    """DNS answers from a table: the records listed for a name, TEMP a failed lookup, any
    other name does not exist. Records every name asked."""

    def __init__(self, dns: Dns) -> None:
        self.dns = {normalise(k): v for k, v in dns.items()}
        self.asked: list[str] = []

    def cached(self, name: str, rdtype: str) -> Answer | None:
        return self._answer(name, rdtype)

    async def query(self, name: str, rdtype: str) -> Answer:
        return self._answer(name, rdtype)

    def _answer(self, name: str, rdtype: str) -> Answer:
        assert rdtype == "TXT"
        name = normalise(name)
        self.asked.append(name)
        found = self.dns.get(name)
        if found is None:
            return Answer(name, rdtype, Status.NXDOMAIN)
        if found == TEMP:
            return Answer(name, rdtype, Status.TEMPERROR, error="SERVFAIL")
        assert isinstance(found, tuple)
        return Answer(name, rdtype, Status.OK if found else Status.NODATA, found)


class Draw(random.Random):
    """The sampling draw of a case, every time."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


Outcome = tuple[str, str, str]


def inputs(c: Case) -> tuple[list[str], SpfResults | None, list[DkimResult]]:
    spf = None if c.spf is None else SpfResults(SpfResult("mailfrom", c.spf[1], c.spf[0]), None)
    dkim = [DkimResult(result, domain, "sel") for result, domain in c.dkim]
    # as author_domains() gives them: lower case, no final dot
    return [a.lower().rstrip(".") for a in c.author], spf, dkim


async def run(c: Case) -> tuple[Outcome, list[str]]:
    """The asynchronous path (DmarcCheck._later): lookups through `query`."""
    resolver = TableResolver(c.dns)
    authors, spf, dkim = inputs(c)
    got = await evaluate_authors(resolver, authors, spf, dkim, Draw(c.draw))
    return (got.result, got.policy, got.disposition), resolver.asked


def run_now(c: Case) -> Outcome:
    """The synchronous path (DmarcCheck.message): every answer from the cache."""
    resolver = TableResolver(c.dns)
    authors, spf, dkim = inputs(c)
    assert authors, "every case has an author domain"
    found = []
    for domain in authors[:MAX_AUTHOR_DOMAINS]:
        now = find_policy_now(resolver, domain)
        assert now is not None
        found.append(judge(domain, now[0], spf, dkim, Draw(c.draw)))
    got = combined(found, authors)
    return got.result, got.policy, got.disposition


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
async def test_corpus(c: Case) -> None:
    got, asked = await run(c)
    assert got == c.expect, f"{c.name} (RFC 7489 {c.section}): {got} != {c.expect}"
    if c.queried is not None:
        assert asked == list(c.queried)
    assert run_now(c) == c.expect, "the synchronous path decides differently"


def test_the_corpus_is_large_named_and_cited() -> None:
    assert len(CASES) >= 300
    names = Counter(c.name for c in CASES)
    assert [n for n, k in names.items() if k > 1] == []
    assert all(c.section for c in CASES)
    results = Counter(c.expect[0] for c in CASES)
    assert {"pass", "fail", "none", "temperror", "permerror"} <= set(results)
