"""An ordinary sender's RCPTs do not ask the store for its harvest state again within
HARVEST_CLEAN_TRUST; a harvester's unknown recipients end that trust at once."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

from mailmoat.limits import HARVEST_CLEAN_TRUST
from mailmoat.policy.base import Client, Decision
from mailmoat.policy.harvest import HarvestCheck, HarvestDetector
from mailmoat.smtp.events import RcptTo
from mailmoat.store import MemoryStore
from tests.policy.test_harvest import harvest_settings


class CountingStore(MemoryStore):
    """The real memory store, counting the calls it answers."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    async def get(self, key: str) -> Any:
        self.calls += 1
        return await super().get(key)

    async def count(self, key: str, window: float) -> int:
        self.calls += 1
        return await super().count(key, window)


async def test_a_clean_sender_costs_no_store_call_within_the_trust() -> None:
    store = CountingStore()
    detector = HarvestDetector(harvest_settings(), store)
    sender = Client("192.0.2.20", 40000)
    assert await detector.rcpt(sender) is None
    asked = store.calls
    assert asked > 0
    for _ in range(5):
        assert await detector.rcpt(sender) is None
    assert store.calls == asked  # answered from the trust, no round trip
    # an unknown recipient ends the trust: the next RCPT asks the store again
    await detector.unknown(sender)
    calls = store.calls
    assert await detector.rcpt(sender) is None
    assert store.calls > calls


async def test_the_trust_ends_after_its_bound() -> None:
    store = CountingStore()
    detector = HarvestDetector(harvest_settings(tarpit_after=1), store)
    sender = Client("192.0.2.21", 40000)
    assert await detector.rcpt(sender) is None
    # another worker or node scores this source meanwhile (the shared store says so): once
    # the trust ends, this worker tarpits it too
    await store.hit("dha:ip:192.0.2.21", 100.0, 8)
    for _ in range(int(HARVEST_CLEAN_TRUST * 20 / 0.05)):  # bounded: 20 times the trust
        verdict = await detector.rcpt(sender)
        if verdict is not None and verdict.delay > 0:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the source was trusted past HARVEST_CLEAN_TRUST")


async def test_a_clean_sender_connects_without_a_store_call_within_the_trust() -> None:
    # one message per connection: the connect hook asked the store for both bans every time
    store = CountingStore()
    detector = HarvestDetector(harvest_settings(), store)
    sender = Client("192.0.2.22", 40000)
    assert await detector.connect(sender) is None
    assert await detector.rcpt(sender) is None  # found clean: trusted from here on
    asked = store.calls
    for _ in range(5):
        assert await detector.connect(sender) is None
        assert await detector.rcpt(sender) is None
    assert store.calls == asked


async def test_a_harvest_ban_is_still_refused_at_connect() -> None:
    store = CountingStore()
    s = harvest_settings()
    detector = HarvestDetector(s, store)
    harvester = Client("192.0.2.23", 40000)
    assert await detector.rcpt(harvester) is None  # clean at first
    for _ in range(s.ban_after):
        await detector.unknown(harvester)  # ends the trust and scores up to the ban
    verdict = await detector.connect(Client("192.0.2.23", 40001))
    assert verdict is not None and verdict.close


class RemoteLikeStore(CountingStore):
    """Each call takes a turn of the event loop, as a worker's round trip to the supervisor."""

    async def get(self, key: str) -> Any:
        await asyncio.sleep(0.01)
        return await super().get(key)

    async def count(self, key: str, window: float) -> int:
        await asyncio.sleep(0.01)
        return await super().count(key, window)


async def test_sessions_of_one_source_share_one_store_read() -> None:
    # 20 sessions of a busy sender find its trust run out together: one read, not twenty
    store = RemoteLikeStore()
    detector = HarvestDetector(harvest_settings(), store)
    sessions = [Client("192.0.2.24", 40000 + i) for i in range(20)]
    assert await asyncio.gather(*(detector.rcpt(c) for c in sessions)) == [None] * 20
    assert store.calls == 4  # two bans, two windows
    assert await asyncio.gather(*(detector.connect(c) for c in sessions)) == [None] * 20
    assert store.calls == 4  # and now trusted


async def test_a_connect_reads_only_the_bans() -> None:
    # the scores wait for the RCPT: with Redis the bans are a local copy, so the greeting
    # never waits on Redis; the RCPT's one read (bans and scores together) trusts the source
    store = CountingStore()
    detector = HarvestDetector(harvest_settings(), store)
    sender = Client("192.0.2.25", 40000)
    assert await detector.connect(sender) is None
    assert store.calls == 2  # the address's ban and the network's, no score window
    assert await detector.rcpt(sender) is None
    assert store.calls == 2 + 4
    assert await detector.connect(sender) is None
    assert await detector.rcpt(sender) is None
    assert store.calls == 2 + 4  # trusted


class InFlightStore(MemoryStore):
    """Each call takes a turn of the event loop, as a worker's round trip to the supervisor,
    and the most calls waiting at once is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = 0
        self.most = 0

    async def _trip(self) -> None:
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        await asyncio.sleep(0.01)
        self.waiting -= 1

    async def get(self, key: str) -> Any:
        await self._trip()
        return await super().get(key)

    async def count(self, key: str, window: float) -> int:
        await self._trip()
        return await super().count(key, window)

    async def hit(self, key: str, window: float, cap: int) -> int:
        await self._trip()
        return await super().hit(key, window, cap)


async def test_a_read_asks_for_bans_and_scores_in_one_round_trip() -> None:
    # a worker's store calls are round trips to the supervisor: asked together, not in a row
    store = InFlightStore()
    detector = HarvestDetector(harvest_settings(), store)
    sender = Client("192.0.2.26", 40000)
    assert await detector.rcpt(sender) is None
    assert store.most == 4  # two bans and two score windows at once
    store.most = 0
    await detector.unknown(sender)
    assert store.most == 2  # the address's and the network's window, hit together


async def test_connects_of_one_source_share_one_ban_read_and_trust_it() -> None:
    # one message per connection, 20 at once: the connect hook's ban read is shared, and its
    # "not banned" trusted for HARVEST_CLEAN_TRUST, before any RCPT trusted the source
    store = RemoteLikeStore()
    detector = HarvestDetector(harvest_settings(), store)
    sessions = [Client("192.0.2.27", 40000 + i) for i in range(20)]
    assert await asyncio.gather(*(detector.connect(c) for c in sessions)) == [None] * 20
    assert store.calls == 2  # the address's ban and the network's, once
    assert await detector.connect(Client("192.0.2.27", 41000)) is None
    assert store.calls == 2
    await detector.unknown(sessions[0])  # its own unknown recipient ends that trust
    assert await detector.connect(Client("192.0.2.27", 41001)) is None
    assert store.calls == 4


async def test_a_trusted_source_is_answered_without_a_coroutine() -> None:
    """HarvestCheck's connect and RCPT hooks answer None at once for a source found clean
    within the trust, so the session never takes its awaiting path (a coroutine, and for
    the session a pause) for an ordinary sender; an unknown source still reads the store,
    and a banned one is still refused."""
    store = CountingStore()
    check = HarvestCheck(HarvestDetector(harvest_settings(), store))
    sender = Client("192.0.2.30", 40000)
    rcpt = RcptTo(address="a@example.test", domain="example.test")
    first = check.connect(sender)
    assert inspect.isawaitable(first)  # not known yet: the store is asked
    assert await first is None
    assert check.connect(sender) is None  # unbanned, trusted: synchronous
    pending = check.rcpt(sender, rcpt)
    assert inspect.isawaitable(pending)
    assert await pending is None  # found clean
    asked = store.calls
    for _ in range(5):
        assert check.connect(sender) is None
        assert check.rcpt(sender, rcpt) is None
    assert store.calls == asked
    # a banned source is not trusted: its connect reads the ban and refuses
    banned = Client("192.0.2.31", 40000)
    ip_key, _ = check.detector.keys(banned)
    await store.set("ban:" + ip_key, "1", 60.0)
    verdict = check.connect(banned)
    assert inspect.isawaitable(verdict)
    refused = await verdict
    assert isinstance(refused, Decision) and refused.close
