"""Open connections counted across nodes (`RedisStore.slots`, the `mm_slots` function) on a
real redis-server: each node's absolute count, summed; Redis down, this node's count scaled
by the nodes; a report that failed reaches Redis once it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from mailmoat.store import MemoryStore
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
            server.start()  # empty: b's count is lost with it, a's is sent again
            await wait_for(lambda: server.command("HLEN", "mm:" + KEY) == b":1", "a's report")
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
