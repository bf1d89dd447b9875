"""MemoryStore semantics (the Redis store must pass the same tests later)."""

from __future__ import annotations

import pytest

from mailmoat import config
from mailmoat.server.gateway import Gateway
from mailmoat.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_incr_is_a_fixed_window_counter(clock: Clock) -> None:
    s = MemoryStore(clock=clock)
    assert await s.incr("k", ttl=10) == 1
    clock.now += 9
    assert await s.incr("k", ttl=10, amount=2) == 3
    clock.now += 1.5  # the window started at the first increment
    assert await s.incr("k", ttl=10) == 1


async def test_sliding_window_forgets_old_events_and_saturates_at_cap(clock: Clock) -> None:
    s = MemoryStore(clock=clock)
    for _ in range(3):
        await s.hit("w", window=10, cap=100)
        clock.now += 4
    # events at 1000, 1004, 1008; now 1012: the first is out of the window
    assert await s.count("w", window=10) == 2
    assert await s.hit("w", window=10, cap=100) == 3
    for _ in range(10):
        n = await s.hit("burst", window=10, cap=5)
    assert n == 5


async def test_values_expire_and_ttl_reports_remaining(clock: Clock) -> None:
    s = MemoryStore(clock=clock)
    await s.set("ban:1.2.3.4", "3", ttl=60)
    clock.now += 20
    assert await s.get("ban:1.2.3.4") == "3"
    assert await s.ttl("ban:1.2.3.4") == pytest.approx(40)
    clock.now += 40
    assert await s.get("ban:1.2.3.4") is None
    assert await s.ttl("ban:1.2.3.4") is None


async def test_key_count_is_bounded(clock: Clock) -> None:
    s = MemoryStore(max_keys=100, clock=clock)
    for i in range(10_000):
        await s.incr(f"ip:{i}", ttl=3600)
    assert len(s) == 100
    assert await s.get("ip:9999") == "1"  # the most recent survive
    assert await s.get("ip:0") is None


async def test_rate_keys_cannot_evict_security_state(clock: Clock) -> None:
    """A flood of ordinary keys from fresh addresses (one IPv6 /64) churns only its own
    region: bans, ban counters, strike windows and harvest scores all stay."""
    s = MemoryStore(max_keys=100, clock=clock, max_security_keys=100)
    await s.set("ban:2001:db8::bad", "1", ttl=3600)
    await s.incr("bans:2001:db8::bad", ttl=86400)
    await s.hit("strikes:2001:db8::bad2", window=600, cap=5)
    await s.hit("dha:ip:2001:db8::bad3", window=600, cap=50)
    await s.set("ban:dha:net:2001:db8:1::/48", "1", ttl=3600)
    await s.hit("ca:all", window=60, cap=100)  # call-ahead probes to the internal server
    for i in range(10_000):
        await s.hit(f"rate:2001:db8:0:1::{i:x}", window=60, cap=31)
        await s.set(f"pregreet:2001:db8:0:1::{i:x}", "ok", ttl=600)
    assert await s.ttl("ban:2001:db8::bad") == pytest.approx(3600)
    assert await s.get("bans:2001:db8::bad") == "1"
    assert await s.count("strikes:2001:db8::bad2", window=600) == 1
    assert await s.count("dha:ip:2001:db8::bad3", window=600) == 1
    assert await s.get("ban:dha:net:2001:db8:1::/48") == "1"
    assert await s.count("ca:all", window=60) == 1
    assert len(s) == 100 + 6  # the ordinary region is full, the security state untouched
    assert s.evicted == 20_000 - 100 and s.evicted_security == s.evicted_bans == 0


async def test_full_security_region_gives_up_strikes_first_then_the_shortest_bans(
    clock: Clock,
) -> None:
    s = MemoryStore(max_keys=100, clock=clock, max_security_keys=100)
    for i in range(50):
        await s.set(f"ban:10.0.0.{i}", "1", ttl=1000 + i)
    for i in range(1000):  # strikes from many addresses evict one another, never a ban
        await s.hit(f"strikes:10.1.{i // 250}.{i % 250}", window=600, cap=5)
    assert all([await s.get(f"ban:10.0.0.{i}") == "1" for i in range(50)])
    assert s.evicted_bans == 0 and s.evicted_security == 1000 - 50
    for i in range(80):  # longer bans than every one held: the shortest held go
        await s.set(f"ban:10.2.0.{i}", "1", ttl=5000 + i)
    kept = [i for i in range(50) if await s.get(f"ban:10.0.0.{i}") is not None]
    assert kept == list(range(30, 50))  # the 30 that ended soonest made room
    assert all([await s.get(f"ban:10.2.0.{i}") == "1" for i in range(80)])
    await s.set("ban:10.3.0.1", "1", ttl=10)  # shorter than every ban held: it is the one dropped
    assert await s.get("ban:10.3.0.1") is None
    assert len(s) == 100 and s.evicted_bans == 30 + 1
    clock.now += 1100  # expired bans make room again, soonest first
    await s.set("ban:10.3.0.2", "1", ttl=10)
    assert await s.get("ban:10.3.0.2") == "1"
    assert len(s) == 81


def test_the_store_setting_governs_the_default_bound() -> None:
    defaults = config.StoreSettings()
    store = MemoryStore()
    assert (store.max_keys, store.max_security_keys) == (
        defaults.max_keys,
        defaults.max_security_keys,
    )
    settings = config.load(None, {"store.max_keys": 150, "store.max_security_keys": 120})
    gw = Gateway(settings)
    assert isinstance(gw.store, MemoryStore)
    assert (gw.store.max_keys, gw.store.max_security_keys) == (150, 120)
