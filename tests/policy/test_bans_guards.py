"""Ban promises that mutation testing (scripts/mutation over policy/bans.py, a run cut short)
found nothing holding: the strike goes to the untrusted client that was refused, never to a
trusted one, and a manual ban holds for its length."""

from __future__ import annotations

import asyncio
from ipaddress import ip_address

import pytest

from mailmoat.config import BanSettings
from mailmoat.policy import bans as bans_module
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Client
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.policy.test_bans import Clock, _bans, _settle
from tests.support.dns_gateway import captured_logs
from tests.support.waiting import wait_for


async def test_refusals_strike_the_untrusted_client_and_ban_it_never_the_trusted() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock, strikes=2)
    r = reply(421, "4.7.0", "x")
    untrusted = Client("192.0.2.20", 1)
    trusted = Client("192.0.2.21", 1)
    trusted.trusted = True
    for _ in range(3):
        bans.rejected(untrusted, Rejected("too_many_errors", r))
        bans.rejected(trusted, Rejected("too_many_errors", r))
        await _settle(bans)
        clock.now += 2  # past the cooldown between two strikes
    assert await bans.banned("192.0.2.20")
    assert not await bans.banned("192.0.2.21")


async def test_a_manual_ban_holds_for_its_length_then_ends() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    await bans.ban_manually("192.0.2.30", 100)
    assert bans.banned_now("192.0.2.30")
    clock.now += 99
    assert bans.banned_now("192.0.2.30")
    clock.now += 2
    assert not bans.banned_now("192.0.2.30")


async def test_a_ban_the_store_holds_with_under_a_second_left_still_bans() -> None:
    """The store's TTL is a float: a ban with 0.5 s left is a ban, not a "not banned" answer
    trusted (and cached) for `bans.cache` seconds."""
    clock = Clock()
    bans, store, _ = _bans(clock)
    await store.set("ban:192.0.2.40", "1", 0.5)
    assert await bans.banned("192.0.2.40")
    assert bans.banned_now("192.0.2.40")
    clock.now += 0.6
    assert not await bans.banned("192.0.2.40")


async def test_network_bans_stop_at_the_bound_and_a_new_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At MAX_NETWORK_BANS (lowered here to 3: the bound's value is limits.py's, the test is of
    the comparison) the administrator's next network ban is refused with a one-line error;
    one already banned may be banned again."""
    monkeypatch.setattr(bans_module, "MAX_NETWORK_BANS", 3)
    clock = Clock()
    bans, _, _ = _bans(clock)
    for i in range(3):
        await bans.ban_manually(f"198.51.{i}.0/24", 100)
    with pytest.raises(ValueError, match="already 3 network bans"):
        await bans.ban_manually("198.51.3.0/24", 100)
    assert not bans.network_banned(ip_address("198.51.3.1"))
    await bans.ban_manually("198.51.0.0/24", 200)  # renewing one is no new ban
    assert bans.network_banned(ip_address("198.51.0.1"))
    bans.learn("net:198.51.4.0/24", 100)  # nor does another node's push go past the bound
    assert not bans.network_banned(ip_address("198.51.4.1"))


@pytest.mark.parametrize(
    "name",
    [
        *("net:not-a-network", "net:0.0.0.0/0", "net:2001:db8::/15", "net:", "net:/24"),
        *("not-an-address", "192.0.2.300", "", "192.0.2.1/24"),
    ],
)
async def test_a_ban_the_store_pushes_that_cannot_be_taken_is_ignored(name: str) -> None:
    """What another node (or anything that can write to Redis) pushes is checked as the
    administrator's own ban would be: a garbled address, or a garbled or too-wide network, is
    dropped, never raised into the store's listener."""
    clock = Clock()
    bans, _, _ = _bans(clock)
    bans.learn(name, 60)
    for ip in ("192.0.2.1", "2001:db8::1"):
        assert not bans.network_banned(ip_address(ip))
        assert not bans.banned_now(ip)
    bans.learn("net:203.0.113.0/24", 60)  # a good one still is taken, for its seconds
    assert bans.network_banned(ip_address("203.0.113.9"))
    clock.now += 60
    assert not bans.network_banned(ip_address("203.0.113.9"))


async def test_the_listing_names_each_kind_of_ban_and_its_seconds_to_a_tenth() -> None:
    clock = Clock()
    bans, store, _ = _bans(clock)
    await store.set("ban:192.0.2.50", "1", 400.34)
    await store.set("ban:net:198.51.100.0/24", "admin", 300.34)
    await store.set("ban:dha:net:203.0.113.0/24", "1", 200.34)
    await store.set("ban:dha:ip:192.0.2.51", "1", 100.34)
    assert await bans.listed() == [
        {"target": "192.0.2.50", "kind": "address", "seconds": 400.3},
        {"target": "198.51.100.0/24", "kind": "network", "seconds": 300.3},
        {"target": "203.0.113.0/24", "kind": "harvest net", "seconds": 200.3},
        {"target": "192.0.2.51", "kind": "harvest ip", "seconds": 100.3},
    ]


async def test_an_address_ban_another_node_sets_then_lifts_is_followed() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    bans.learn("192.0.2.60", 60)
    assert bans.banned_now("192.0.2.60") and await bans.banned("192.0.2.60")
    bans.learn("192.0.2.60", None)
    assert not bans.banned_now("192.0.2.60")
    bans.learn("192.0.2.61", 10 * 366 * 86400.0)  # a push longer than any ban: cut to a year
    clock.now += 366 * 86400.0 + 1
    assert not bans.banned_now("192.0.2.61")


class StuckStore(MemoryStore):
    """A store whose strike count never comes back (a Redis that hangs)."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock=clock)
        self.asked = asyncio.Event()
        self.ended = False

    async def hit(self, key: str, window: float, cap: int) -> int:
        self.asked.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.ended = True
        raise AssertionError("unreachable")


async def test_close_ends_a_strike_write_under_way_and_returns() -> None:
    """Shutting down with a strike's store write hanging: close() cancels it, waits until it
    has ended, and returns (no CancelledError out of close(), which would stop the closing
    of the checks after this one)."""
    clock = Clock()
    store = StuckStore(clock)
    settings = BanSettings.model_validate({"strikes": 3, "duration": 60, "max_duration": 200})
    bans = BanList(settings, store, Stats(), clock)
    bans.strike("192.0.2.70", "rate")
    await wait_for(store.asked.is_set, "the strike's store write started")
    await bans.close()
    assert store.ended


@pytest.mark.parametrize("seconds", [0.5, 1, 366 * 86400.0])
async def test_a_manual_ban_of_any_length_over_zero_up_to_a_year_is_taken(seconds: float) -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    assert (await bans.ban_manually("192.0.2.80", seconds))["seconds"] == seconds
    assert bans.banned_now("192.0.2.80")


@pytest.mark.parametrize("cache", [0.5, 1.0])
async def test_a_not_banned_answer_is_trusted_for_bans_cache_seconds(cache: float) -> None:
    """A short `bans.cache` (a second or less) still caches the store's "not banned"."""
    clock = Clock()
    bans, _, _ = _bans(clock, cache=cache)
    assert not await bans.banned("192.0.2.90")
    assert bans.clear_now("192.0.2.90")
    clock.now += cache
    assert not bans.clear_now("192.0.2.90")


async def test_a_network_ban_ends_when_its_seconds_are_up() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    await bans.ban_manually("198.51.100.0/24", 100)
    clock.now += 99.5
    assert bans.network_banned(ip_address("198.51.100.7"))
    clock.now += 0.5
    assert not bans.network_banned(ip_address("198.51.100.7"))


async def test_a_network_written_with_host_bits_is_banned_as_its_network() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    assert (await bans.ban_manually("198.51.100.77/24", 100))["target"] == "198.51.100.0/24"
    assert bans.network_banned(ip_address("198.51.100.1"))


async def test_the_widest_network_ban_is_taken_and_a_wider_one_refused() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    for widest in ("10.0.0.0/8", "2001:db8::/16"):
        assert (await bans.ban_manually(widest, 100))["kind"] == "network"
    for wider in ("10.0.0.0/7", "2001:db8::/15"):
        with pytest.raises(ValueError, match="wider than"):
            await bans.ban_manually(wider, 100)


@pytest.mark.parametrize("seconds", [0, -5, 366 * 86400.0 + 1])
async def test_a_manual_ban_of_no_length_a_negative_one_or_over_a_year_is_refused(
    seconds: float,
) -> None:
    clock = Clock()
    bans, store, _ = _bans(clock)
    with pytest.raises(ValueError, match="a ban lasts more than 0"):
        await bans.ban_manually("192.0.2.81", seconds)
    assert not bans.banned_now("192.0.2.81") and await store.ttl("ban:192.0.2.81") is None


async def test_a_strike_makes_a_suspect_for_the_strike_window_only() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock, strike_window=100)
    bans.strike("192.0.2.82", "rate")
    await _settle(bans)
    clock.now += 99
    assert bans.suspect("192.0.2.82")
    clock.now += 1
    assert not bans.suspect("192.0.2.82")


class FailingStore(MemoryStore):
    """Fails to record the strikes of 192.0.2.83 only."""

    async def hit(self, key: str, window: float, cap: int) -> int:
        if key.endswith("192.0.2.83"):
            raise ConnectionError("store down")
        return await super().hit(key, window, cap)


async def test_a_strike_the_store_could_not_record_is_logged() -> None:
    clock = Clock()
    settings = BanSettings.model_validate({"strikes": 3, "duration": 60, "max_duration": 200})
    bans = BanList(settings, FailingStore(clock=clock), Stats(), clock)
    with captured_logs() as lines:
        bans.strike("192.0.2.83", "rate")
        bans.strike("192.0.2.84", "rate")  # recorded fine: nothing logged
        await _settle(bans)
    [line] = lines.of("store_error")
    assert "store down" in line["error"]
    await bans.close()
