"""The RFC 7208 SPF test suite (openspf's rfc7208-tests.yml, see data/README.md), every case
through mailmoat's SPF path: `SpfEvaluator` and mailmoat's resolver, asking an in-process name
server that serves the case's zone (tests/support/fake_dns.py: no socket, and a timeout per type
or a new zone per case, which dnsmasq cannot express). The cases beyond the suite ask a real
server on 127.0.0.1 (tests/support/zone_server.py), the long explanation over TCP after a
truncated UDP answer. Each case must give one of its results and, where it names one, its
explanation ("DEFAULT" is pyspf's default explanation for the result, as in pyspf's own driver).

The zone is read as pyspf's driver (test/testspf.py) reads it: an SPF (type 99) record is served
as TXT when the name has no TXT record (mailmoat never asks for type 99, RFC 7208 3.1), "NONE"
stands for no record, and "TIMEOUT" for a query that gets no answer. Exceptions would be named
in `EXCEPTIONS` with their reason and marked xfail (strict: the day one passes, its mark must
go); there are none.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import spf
import yaml

from mailmoat import config
from mailmoat.dns import Resolver
from mailmoat.policy.spf import MAX_EXPLANATION, SpfEvaluator
from tests.support.dns_records import TIMEOUT, Entry, Record, Zone
from tests.support.fake_dns import ZoneNameserver, resolver
from tests.support.zone_server import ZoneServer

SUITE = Path(__file__).parent / "data" / "rfc7208-tests.yml"

EXCEPTIONS: dict[str, str] = {
    # none: ptr-cname-loop, which plain pyspf misses (a DNS error on a PTR name's address
    # lookup must skip that name, RFC 7208 5.5), passes through mailmoat's _Query
}


@dataclass(frozen=True)
class Case:
    name: str
    scenario: str
    host: str
    mailfrom: str
    helo: str
    results: tuple[str, ...]
    explanation: str | None
    zone: Zone


def _strings(value: Any) -> tuple[bytes, ...]:
    """The strings of one TXT record; a record of no strings (not valid on the wire) is served
    as one empty string, as a name server would."""
    values = value if isinstance(value, list) else [value]
    return tuple(str(v).encode() for v in values) or (b"",)


def load_zone(data: dict[str, list[Any]]) -> Zone:
    zone: Zone = {}
    for name, items in data.items():
        entries: list[Entry] = []
        spf_records: list[Record] = []
        has_txt = False
        for item in items:
            if item == TIMEOUT:
                entries.append(TIMEOUT)
                continue
            [(rdtype, value)] = item.items()
            if rdtype in ("TXT", "SPF"):
                has_txt = has_txt or rdtype == "TXT"
                value = TIMEOUT if value == TIMEOUT else _strings(value)
                if value == (b"NONE",):
                    continue
                if rdtype == "SPF":
                    spf_records.append(Record("TXT", value))
                    continue
            entries.append(Record(rdtype, value))
        if not has_txt:
            entries += spf_records
        zone[name.rstrip(".").lower()] = entries
    return zone


def load() -> list[Case]:
    cases = []
    with SUITE.open("rb") as f:
        for scenario in yaml.safe_load_all(f):
            zone = load_zone(scenario.get("zonedata") or {})
            for name, t in scenario["tests"].items():
                result = t["result"]
                cases.append(
                    Case(
                        name,
                        scenario["description"],
                        str(t["host"]),
                        str(t["mailfrom"]),
                        str(t["helo"]),
                        tuple(result) if isinstance(result, list) else (result,),
                        t.get("explanation"),
                        zone,
                    )
                )
    return cases


CASES = load()


def params() -> Iterator[Any]:
    for case in CASES:
        marks = []
        if case.name in EXCEPTIONS:
            marks.append(pytest.mark.xfail(reason=EXCEPTIONS[case.name], strict=True))
        yield pytest.param(case, id=case.name, marks=marks)


def test_the_suite_is_all_there() -> None:
    assert len(CASES) == 203
    assert len({c.name for c in CASES}) == 203
    assert sum(c.explanation is not None for c in CASES) == 22


@pytest.mark.parametrize("case", params())
async def test_rfc7208(case: Case) -> None:
    evaluator = SpfEvaluator(resolver(ZoneNameserver(case.zone, domains=None)))
    # mailmoat's session: the null sender is checked as postmaster@HELO (RFC 7208 2.4)
    got = await evaluator.check(case.host, case.mailfrom, case.helo)
    assert got.result in case.results, (case.scenario, got)
    if case.explanation is not None:
        want = spf.EXPLANATIONS[got.result] if case.explanation == "DEFAULT" else case.explanation
        assert got.explanation == want, (case.scenario, got)


# --- beyond the suite ----------------------------------------------------------------------------


async def evaluate(server: ZoneServer, zone: dict[str, list[Any]], ip: str, sender: str) -> Any:
    server.serve(load_zone(zone))
    settings = config.build({"dns": {"nameservers": [server.address], "timeout": 1.0}})
    return await SpfEvaluator(Resolver(settings.dns)).check(ip, sender, "helo.example.com")


async def test_a_ptr_lookup_error_makes_ptr_not_match(zone_server: ZoneServer) -> None:
    """RFC 7208 5.5: "If a DNS error occurs while doing the PTR RR lookup, then this mechanism
    fails to match" (the suite tests only the A lookup of a PTR name); %{p} is "unknown"."""
    zone = {
        "ptr.example.com": [{"SPF": "v=spf1 ptr -all exp=why.example.com"}],
        "why.example.com": [{"TXT": "%{p} may not send"}],
        "4.2.0.192.in-addr.arpa": [TIMEOUT],
    }
    got = await evaluate(zone_server, zone, "192.0.2.4", "a@ptr.example.com")
    assert (got.result, got.explanation) == ("fail", "unknown may not send"), got


async def test_a_long_explanation_is_cut(zone_server: ZoneServer) -> None:
    """The sender's domain writes the explanation, and results are cached: it is kept to
    MAX_EXPLANATION characters, whatever the TXT record holds."""
    text = "why " * 1000
    zone = {
        "long.example.com": [{"SPF": "v=spf1 -all exp=why.example.com"}],
        "why.example.com": [{"TXT": [text[i : i + 250] for i in range(0, len(text), 250)]}],
    }
    got = await evaluate(zone_server, zone, "192.0.2.4", "a@long.example.com")
    assert (got.result, got.explanation) == ("fail", text[:MAX_EXPLANATION]), got
