"""The bounded, expiring cache behind the DNS answers and the checks' results."""

from __future__ import annotations

from mailmoat.dns.cache import TtlCache


def test_entries_expire_and_the_least_recently_used_go_first() -> None:
    now = [100.0]
    cache: TtlCache[str, int] = TtlCache(2, lambda: now[0])
    cache.put("a", 1, 110.0)
    cache.put("b", 2, 105.0)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3, 120.0)
    assert (cache.get("b"), cache.get("a"), cache.get("c"), len(cache)) == (None, 1, 3, 2)
    now[0] = 110.0
    assert cache.get("a") is None and len(cache) == 1  # expired entries are dropped


def test_nothing_is_kept_past_its_expiry_or_without_room() -> None:
    cache: TtlCache[str, int] = TtlCache(10, lambda: 100.0)
    cache.put("past", 1, 100.0)
    cache.put("never", 2, 0.0)  # an answer that was not cached has no expiry
    assert len(cache) == 0
    none: TtlCache[str, int] = TtlCache(0, lambda: 0.0)
    none.put("a", 1, 50.0)
    assert none.get("a") is None
