"""Accepting a connection never waits on Redis: admission's caps and rate, and the harvest
check's connect hook, decide from what the node holds, on a real redis-server with two
store instances as two nodes. The other node's counts arrive over the counts channel; this
node's own go out together, one pipelined round trip per SLOTS_REPORT_DELAY."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.policy.base import Client, Decision
from mailmoat.policy.harvest import HarvestDetector
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from mailmoat.store.redis_store import RedisStore
from tests.policy.test_harvest import harvest_settings
from tests.support.redis import RedisServer, available, redis_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")

SOURCE = "192.0.2.1"
IP_KEY = f"slots:ip:{3221225985}"


@asynccontextmanager
async def nodes(server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    """Two nodes' stores, each subscribed to the ban and counts channels."""
    a = RedisStore(server.url, MemoryStore(), fallback_nodes=2)
    b = RedisStore(server.url, MemoryStore(), fallback_nodes=2)
    try:
        for store in (a, b):
            store.watch_bans(lambda name, seconds: None)
            await wait_for(lambda s=store: s.feed is not None and s.feed.synced, "feed synced")
        yield a, b
    finally:
        await a.close()
        await b.close()


def defences(store: RedisStore, **overrides: object) -> Defences:
    settings = config.load(None, {"server.hostname": "mx.test", "bans.strikes": 0, **overrides})
    return Defences(settings, Stats(), store, time.monotonic)


def at_once(verdict: object) -> Decision | None:
    assert not inspect.isawaitable(verdict), "admission waited on Redis"
    assert verdict is None or isinstance(verdict, Decision)
    return verdict


async def test_the_cap_on_an_address_holds_across_nodes_without_asking_redis(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, b):
            caps = {"admission.max_per_ip": 2, "admission.max_rate": 0}
            on_a, on_b = defences(a, **caps).admission, defences(b, **caps).admission
            first = Client(SOURCE, 1)
            assert at_once(on_b.connect(first)) is None
            assert at_once(on_b.connect(Client(SOURCE, 2))) is None
            await wait_for(lambda: a.peers.open(IP_KEY) == 2, "a heard of b's two")
            third = Client(SOURCE, 3)
            refused = at_once(on_a.connect(third))
            assert refused is not None and refused.reason == "max_per_ip"
            on_a.disconnect(third)  # as the session does after its 421
            on_b.disconnect(first)
            await wait_for(lambda: a.peers.open(IP_KEY) == 1, "a heard one ended")
            assert at_once(on_a.connect(Client(SOURCE, 4))) is None
            await wait_for(lambda: server.command("HLEN", "mm:" + IP_KEY) == b":2", "in Redis")


async def test_the_connection_rate_holds_across_nodes_without_asking_redis(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, b):
            rate = {"admission.max_rate": 3}
            on_a, on_b = defences(a, **rate).admission, defences(b, **rate).admission
            for port in (1, 2):
                assert at_once(on_b.connect(Client(SOURCE, port))) is None
            assert at_once(on_a.connect(Client(SOURCE, 3))) is None  # the third: a's first
            await wait_for(lambda: a.peers.events(f"rate:{SOURCE}", 60) == 2, "a heard b's")
            refused = at_once(on_a.connect(Client(SOURCE, 4)))
            assert refused is not None and refused.reason == "rate"
            await wait_for(lambda: b.peers.events(f"rate:{SOURCE}", 60) == 2, "b heard a's")
            refused = at_once(on_b.connect(Client(SOURCE, 5)))
            assert refused is not None and refused.reason == "rate"


async def test_counts_go_to_redis_together_in_one_round_trip(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, _):
            trips, hits, slots = a.round_trips, a.calls_by["mm_hit"], a.calls_by["mm_slots"]
            for own in range(1, 21):  # twenty connections from one address in one loop turn
                assert a.hit_now(f"rate:{SOURCE}", 60, 100) == own
                assert a.slots_now(IP_KEY, own) == own
            await wait_for(lambda: server.command("ZCARD", f"mm:rate:{SOURCE}") == b":20", "20")
            await wait_for(lambda: not a._reporting, "sent")
            assert a.calls_by["mm_hit"] - hits == 1 and a.calls_by["mm_slots"] - slots == 1
            assert a.round_trips - trips == 1
            assert server.command("HGET", "mm:" + IP_KEY, a.node.replace(" ", "")) != b"$-1"


async def test_redis_gone_falls_back_to_the_own_count_times_the_nodes(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, _):
            assert a.slots_now(IP_KEY, 1) == 1
            assert a.hit_now(f"rate:{SOURCE}", 60, 10) == 1
            server.shutdown()
            await wait_for(lambda: a.feed is not None and not a.feed.synced, "a's feed lost")
            assert a.slots_now(IP_KEY, 2) == 4  # 2 here, maybe 2 on the other node
            assert a.hit_now(f"rate:{SOURCE}", 60, 10) == 4
            assert a.hit_now(f"rate:{SOURCE}", 60, 5) == 5  # capped as ever


async def test_the_harvest_check_at_connect_asks_redis_nothing(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, b):
            s = harvest_settings()
            on_a, on_b = HarvestDetector(s, a), HarvestDetector(s, b)
            calls = a.calls
            assert await on_a.connect(Client("192.0.2.7", 1)) is None
            assert a.calls == calls  # bans from the feed's copy; the scores wait for RCPT
            harvester = Client("192.0.2.8", 1)
            for _ in range(s.ban_after):  # b bans it
                await on_b.unknown(harvester)
            await wait_for(lambda: a.feed is not None and a.feed.received >= 1, "b's ban at a")
            calls = a.calls
            refused = await on_a.connect(Client("192.0.2.8", 2))
            assert refused is not None and refused.close
            assert a.calls == calls
