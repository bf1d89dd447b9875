"""The work of one SPF check is bounded by the octets of records it reads, not only by its
DNS lookups: mailmoat evaluates a record again from the top after each lookup (spf.py), so a
large record ahead of many lookups (ten mx mechanisms of ten names each: 111 lookups) was read
111 times. Past `MAX_READ` octets the check is permerror, as one past RFC 7208's lookup limits.
The records come from a name server on 127.0.0.1 (the large one over TCP, after a truncated
UDP answer) through mailmoat's real resolver."""

from __future__ import annotations

from typing import Any

from mailmoat import config
from mailmoat.dns import Resolver
from mailmoat.policy.spf import MAX_READ, SpfEvaluator
from tests.policy.test_spf_rfc7208 import load_zone
from tests.support.zone_server import ZoneServer

IP = "192.0.2.200"  # in no record: the check reads everything and ends at -all


def _zone(ip4_terms: int) -> dict[str, list[Any]]:
    """A record of `ip4_terms` ip4 mechanisms ahead of ten mx mechanisms of ten names each."""
    ip4 = " ".join(f"ip4:10.{i // 250}.{i % 250}.1" for i in range(ip4_terms))
    mx = " ".join(f"mx:m{j}.big.example.com" for j in range(10))
    record = f"v=spf1 {ip4} {mx} -all"
    zone: dict[str, list[Any]] = {
        # TXT strings are at most 255 octets
        "big.example.com": [{"TXT": [record[i : i + 255] for i in range(0, len(record), 255)]}],
    }
    for j in range(10):
        names = [f"h{k}.m{j}.big.example.com" for k in range(10)]
        zone[f"m{j}.big.example.com"] = [{"MX": [10, n]} for n in names]
        zone.update({n: [{"A": "198.51.100.1"}] for n in names})
    return zone


async def _check(server: ZoneServer, ip4_terms: int) -> tuple[Any, SpfEvaluator]:
    server.serve(load_zone(_zone(ip4_terms)))
    settings = config.build({"dns": {"nameservers": [server.address], "timeout": 5.0}})
    evaluator = SpfEvaluator(Resolver(settings.dns), timeout=60.0)
    return await evaluator.check(IP, "a@big.example.com", "helo.example.com"), evaluator


async def test_a_large_record_ahead_of_many_lookups_is_permerror(zone_server: ZoneServer) -> None:
    # 800 ip4 terms: an 11.8 KB record, read once per lookup it is 1.3 MB
    got, evaluator = await _check(zone_server, 800)
    assert got.result == "permerror", got
    assert got.explanation == f"SPF records too large to evaluate (over {MAX_READ} octets read)"
    assert evaluator.evaluations < 60  # stopped well before the 113 rounds it would take


async def test_many_lookups_with_an_ordinary_record_are_evaluated(zone_server: ZoneServer) -> None:
    got, evaluator = await _check(zone_server, 20)  # a 0.5 KB record: 113 rounds read 60 KB in all
    assert got.result == "fail", got
    assert evaluator.evaluations == 113
