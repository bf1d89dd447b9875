"""The DNS cache is bounded in bytes, not only in entries (issue 10, the third red-team probe:
600 names with a 60 KB TXT each grew a process by 61 KB per answer; 20,000 entries would have
been 1.2 GB). Filled with big answers through the real resolver, it keeps its accounted bytes
under `dns.cache_bytes` and every lookup still gets the right answer; the cache itself keeps
no entry over its per-entry bound (DNS_MAX_CACHED_ANSWER for the resolver's)."""

from __future__ import annotations

from mailmoat.dns import Status
from mailmoat.dns.cache import TtlCache
from mailmoat.dns.resolver import weight
from tests.support.dns_records import Record
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

BUDGET = 16 * 1024
NAMES = 60


def _txt(i: int, strings: int) -> tuple[bytes, ...]:
    """A TXT record of `strings` strings of 250 octets, its first naming `i`."""
    return (f"v=spf1 -all; n={i};".encode().ljust(250, b"x"),) + (b"y" * 250,) * (strings - 1)


def _zone() -> ZoneNameserver:
    """NAMES names with a 1 KB TXT each (what the in-process server answers over UDP)."""
    return ZoneNameserver({f"r{i}.big.test": [Record("TXT", _txt(i, 4))] for i in range(NAMES)})


async def test_big_answers_stay_within_the_byte_budget_and_still_answer() -> None:
    ns = _zone()
    r = fake_resolver(ns, cache_bytes=BUDGET)
    for i in range(NAMES):
        answer = await r.query(f"r{i}.big.test", "TXT")
        assert answer.status is Status.OK and answer.records[0].startswith(
            b"v=spf1 -all; n=%d;" % i
        )
        assert r._cache.bytes <= BUDGET
    # 60 answers of ~1.5 KB do not fit in 16 KiB: the oldest went, the newest are kept
    assert 0 < len(r) < NAMES and r._cache.bytes > BUDGET - weight(answer)
    assert r.cached(f"r{NAMES - 1}.big.test", "TXT") is not None
    assert r.cached("r0.big.test", "TXT") is None
    # and answered again from the DNS, right
    asked = ns.asked("r0.big.test")
    again = await r.query("r0.big.test", "TXT")
    assert again.records[0].startswith(b"v=spf1 -all; n=0;") and ns.asked("r0.big.test") > asked


async def test_the_default_budget_holds_the_default_count_of_ordinary_answers() -> None:
    """The default budget holds the default count of 1 KB answers: it bites only big ones."""
    r = fake_resolver(_zone())
    assert weight(await r.query("r1.big.test", "TXT")) < 1700
    assert r.s.cache_bytes >= r.s.cache_size * weight(await r.query("r1.big.test", "TXT"))
    assert r.cached("r1.big.test", "TXT") is not None


def test_accounting_follows_replacement_expiry_and_clear() -> None:
    now = [0.0]
    cache: TtlCache[str, bytes] = TtlCache(10, lambda: now[0], len, max_bytes=100, max_entry=60)
    cache.put("a", b"x" * 50, 10.0)
    cache.put("a", b"x" * 30, 10.0)  # replaced: counted once
    assert cache.bytes == 30
    cache.put("b", b"x" * 50, 20.0)
    cache.put("c", b"x" * 40, 20.0)  # 120 > 100: the least recently used (a) goes
    assert (cache.get("a"), cache.bytes) == (None, 90)
    cache.put("b", b"x" * 61, 20.0)  # over max_entry: not kept, and the old b is stale
    assert (cache.get("b"), cache.bytes) == (None, 40)
    now[0] = 30.0
    assert cache.get("c") is None and cache.bytes == 0
    cache.put("d", b"x", 40.0)
    cache.clear()
    assert cache.bytes == 0 and len(cache) == 0
