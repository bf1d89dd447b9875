"""Open connections counted across nodes (`RedisStore.slots`, the `mm_slots` function) on a
real redis-server: each node's absolute count, summed; Redis down, this node's count scaled
by the nodes; a report that failed reaches Redis once it is back; counts Redis lost are sent
again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mailmoat.store import MemoryStore, own_counts
from mailmoat.store.redis_store import RedisStore
from tests.support.redis import RedisServer, available, redis_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")

KEY = "slots:ip:3221225985"


@asynccontextmanager
async def nodes(server: RedisServer) -> AsyncIterator[tuple[RedisStore, RedisStore]]:
    a = RedisStore(server.url, MemoryStore(), fallback_nodes=2)
    b = RedisStore(server.url, MemoryStore(), fallback_nodes=2)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_each_node_sets_its_own_count_and_gets_the_sum(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, b):
            assert await a.slots(KEY, 2) == 2
            assert await b.slots(KEY, 1) == 3
            assert await b.slots(KEY, 1) == 3  # absolute: a repeated report adds nothing
            assert await a.slots(KEY, 0) == 1
            assert await b.slots(KEY, 0) == 0
            assert server.command("EXISTS", "mm:" + KEY) == b":0"  # nothing left behind


async def test_redis_down_scales_the_own_count_and_the_report_follows_later(
    tmp_path: Path,
) -> None:
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, b):
            assert await b.slots(KEY, 1) == 1
            server.shutdown()
            # never a pass the cluster could refuse: 2 here, maybe 2 elsewhere
            assert await a.slots(KEY, 2) == 4
            server.start()  # empty: a's report that failed, and b's count, are sent again
            await wait_for(lambda: server.command("HLEN", "mm:" + KEY) == b":2", "both counts")
            await wait_for(lambda: a.breaker.closed and b.breaker.closed, "both nodes back")
            assert await b.slots(KEY, 1) == 3


async def test_the_reports_of_a_busy_address_go_as_one(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        a = RedisStore(server.url, MemoryStore())
        try:
            assert await a.slots(KEY, 4) == 4
            for own in (3, 2, 1, 0):  # four connections end together
                a.report_slots(KEY, own)
            await wait_for(lambda: server.command("EXISTS", "mm:" + KEY) == b":0", "the report")
            assert a.calls_by["mm_slots"] == 2  # the last count only, not one call per connection

            a.report_slots(KEY, 0)  # one ends, and the next connection comes at once:
            assert await a.slots(KEY, 1) == 1  # its count goes now, and the report with it
            await wait_for(lambda: not a._reporting, "no report left")
            assert server.command("HLEN", "mm:" + KEY) == b":1"  # never overwritten by the 0
            assert a.calls_by["mm_slots"] == 3
        finally:
            await a.close()


async def test_counts_redis_lost_are_sent_again_with_the_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A FLUSHALL (or an expired key, a lost message) takes a's open connections from Redis
    while they stay open: a sends its unchanged count again after SLOTS_REFRESH (shortened
    here), and a node that starts after hears it."""
    monkeypatch.setattr(own_counts, "SLOTS_REFRESH", 0.5)
    with redis_server(tmp_path / "redis") as server:
        async with nodes(server) as (a, c):
            assert await a.slots(KEY, 2) == 2
            assert server.command("FLUSHALL") == b"+OK"
            assert server.command("EXISTS", "mm:" + KEY) == b":0"
            await wait_for(lambda: server.command("HLEN", "mm:" + KEY) == b":1", "sent again")
            assert await c.slots(KEY, 1) == 3  # the cluster's count holds again
            await wait_for(lambda: c.peers.open(KEY) == 2, "c hears a's two")
