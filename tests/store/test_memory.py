"""MemoryStore semantics (the Redis store must pass the same tests later)."""

from __future__ import annotations

import pytest

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
