"""Strikes, bans, escalation and expiry over the real MemoryStore with a settable clock."""

from __future__ import annotations

import asyncio

from mailmoat.config import BanSettings
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Client
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


async def _settle(bans: BanList) -> None:
    while bans._tasks:
        await asyncio.sleep(0)


def _bans(clock: Clock, **kw: float) -> tuple[BanList, MemoryStore, Stats]:
    store, stats = MemoryStore(clock=clock), Stats()
    settings = BanSettings.model_validate({"strikes": 3, "duration": 60, "max_duration": 200, **kw})
    return BanList(settings, store, stats, clock), store, stats


async def test_strikes_within_the_window_ban_and_the_ban_expires() -> None:
    clock = Clock()
    bans, store, stats = _bans(clock)
    for _ in range(3):
        bans.strike("192.0.2.1", "rate")
        await _settle(bans)
        clock.now += 2
    assert bans.banned_now("192.0.2.1") and await bans.banned("192.0.2.1")
    assert await store.ttl("ban:192.0.2.1") is not None
    clock.now += 60
    assert not bans.banned_now("192.0.2.1")
    assert not await bans.banned("192.0.2.1")
    assert stats.get("bans") == 1 and stats.get("strikes") == 3


async def test_a_burst_of_strikes_counts_once_per_cooldown() -> None:
    clock = Clock()
    bans, _, stats = _bans(clock)
    for _ in range(100):
        bans.strike("192.0.2.2", "max_per_ip")
    await _settle(bans)
    assert stats.get("strikes") == 1 and not bans.banned_now("192.0.2.2")
    assert bans.suspect("192.0.2.2") and not bans.suspect("192.0.2.3")


async def test_strikes_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock, strike_window=10)
    for _ in range(5):
        bans.strike("192.0.2.4", "timeout")
        await _settle(bans)
        clock.now += 6
    assert not bans.banned_now("192.0.2.4")


async def test_each_ban_within_memory_doubles_up_to_the_maximum() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    assert [await bans.ban("198.51.100.1", "test") for _ in range(4)] == [60, 120, 200, 200]
    clock.now += 86401  # bans.memory: the slate is clean again
    assert await bans.ban("198.51.100.1", "test") == 60


async def test_bans_set_by_another_node_are_seen_after_the_cache_time() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    settings = BanSettings(cache=5)
    here = BanList(settings, store, Stats(), clock)
    there = BanList(settings, store, Stats(), clock)
    assert not await here.banned("203.0.113.9")  # "not banned" is now cached for 5 s
    await there.ban("203.0.113.9", "test")
    assert not await here.banned("203.0.113.9")
    clock.now += 5
    assert await here.banned("203.0.113.9") and here.banned_now("203.0.113.9")


async def test_hard_limit_rejections_strike_and_trusted_clients_never_do() -> None:
    clock = Clock()
    bans, _, stats = _bans(clock)
    r = reply(421, "4.7.0", "x")
    bans.rejected(Client("192.0.2.9", 1), Rejected("syntax", r))
    assert stats.get("strikes") == 0
    bans.rejected(Client("192.0.2.9", 1), Rejected("too_many_errors", r))
    trusted = Client("192.0.2.10", 1)
    trusted.trusted = True
    bans.rejected(trusted, Rejected("too_many_errors", r))
    await _settle(bans)
    assert stats.get("strikes") == 1


async def test_zero_strikes_disables_bans() -> None:
    clock = Clock()
    bans, _, stats = _bans(clock, strikes=0)
    bans.strike("192.0.2.11", "rate")
    assert not bans._tasks and stats.get("strikes") == 0
    assert not await bans.banned("192.0.2.11")
