"""The Store contract, run against the memory store and against Redis shared by two nodes.

For the memory backend both "nodes" are one MemoryStore. For Redis they are two RedisStores,
each with its own local store, sharing one real redis-server: each step is done on one node
and checked on the other, so an answer can only be right if Redis holds the state (the local
shadow of a node never saw the other node's events). Real time, short windows.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mailmoat.store import MemoryStore, Store
from mailmoat.store.redis_store import RedisStore
from tests.support.redis import RedisServer, available, redis_server

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as srv:
        yield srv


@pytest.fixture(params=["memory", "redis"])
async def nodes(
    request: pytest.FixtureRequest, server: RedisServer
) -> AsyncIterator[tuple[Store, Store]]:
    if request.param == "memory":
        one = MemoryStore()
        yield one, one
        return
    assert server.command("FLUSHALL") == b"+OK"
    a, b = RedisStore(server.url, MemoryStore()), RedisStore(server.url, MemoryStore())
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


async def test_incr_is_a_fixed_window_counter_across_nodes(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    assert await a.incr("c", ttl=0.6) == 1
    assert await b.incr("c", ttl=0.6, amount=2) == 3
    left = await a.ttl("c")
    assert left is not None and 0 < left <= 0.6  # the window started at the first increment
    await asyncio.sleep(0.7)
    assert await b.incr("c", ttl=0.6) == 1


async def test_sliding_window_forgets_old_events_and_saturates(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    assert await a.hit("w", window=0.8, cap=100) == 1
    await asyncio.sleep(0.5)
    assert await b.hit("w", window=0.8, cap=100) == 2
    assert await a.count("w", window=0.8) == 2
    await asyncio.sleep(0.45)  # the first event is out of the window, the second is not
    assert await b.count("w", window=0.8) == 1
    assert await a.hit("w", window=0.8, cap=100) == 2
    for _ in range(5):
        last = await b.hit("s", window=5, cap=3)
    assert last == 3
    assert await a.count("s", window=5) == 3
    assert await a.count("nothing", window=5) == 0


async def test_values_expire_and_are_deleted(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    assert await b.get("v") is None
    assert await b.ttl("v") is None
    await a.set("v", "yes", ttl=0.5)
    assert await b.get("v") == "yes"
    left = await b.ttl("v")
    assert left is not None and 0 < left <= 0.5
    await b.set("v", "again", ttl=5)
    assert await a.get("v") == "again"
    await a.delete("v")
    assert await b.get("v") is None
    await a.set("short", "x", ttl=0.2)
    await asyncio.sleep(0.3)
    assert await b.get("short") is None and await b.ttl("short") is None
    await a.hit("window", window=5, cap=3)
    assert await b.get("window") is None  # a window is no string value


async def test_bans_are_listed_longest_first_on_every_node(nodes: tuple[Store, Store]) -> None:
    a, b = nodes
    await a.set("ban:192.0.2.1", "1", ttl=30)
    await b.set("ban:192.0.2.2", "1", ttl=60)
    await a.set("rate:192.0.2.3", "1", ttl=90)  # not a ban

    async def listed() -> list[str]:
        return [key for key, _ in await b.bans(10)]

    for _ in range(200):  # the other node's ban arrives through the ban feed
        if await listed() == ["ban:192.0.2.2", "ban:192.0.2.1"]:
            break
        await asyncio.sleep(0.02)
    assert await listed() == ["ban:192.0.2.2", "ban:192.0.2.1"]
    assert [key for key, _ in await b.bans(1)] == ["ban:192.0.2.2"]
    assert await a.ttl("ban:192.0.2.2") is not None  # the ban read on the node that did not set it


async def test_every_key_in_redis_has_a_ttl(server: RedisServer, tmp_path: Path) -> None:
    assert server.command("FLUSHALL") == b"+OK"
    store = RedisStore(server.url, MemoryStore())
    try:
        await store.incr("bans:192.0.2.9", ttl=60)
        await store.hit("strikes:192.0.2.9", window=60, cap=5)
        await store.hit("dha:ip:192.0.2.9", window=60, cap=5)
        await store.set("ban:192.0.2.9", "1", ttl=60)
        await store.set("pregreet:192.0.2.9", "ok", ttl=60)
        await store.count("ca:all", window=60)
        await store.delete("strikes:192.0.2.9")

        def keys() -> list[bytes]:
            import redis

            with redis.Redis(port=server.port) as r:
                return sorted(r.keys("*"))

        for _ in range(200):  # the heartbeat runs in the background
            if b"mm:nodes" in keys():
                break
            await asyncio.sleep(0.02)
        assert keys() == [
            b"mm:ban:192.0.2.9",
            b"mm:bans:192.0.2.9",
            b"mm:dha:ip:192.0.2.9",
            b"mm:nodes",
            b"mm:pregreet:192.0.2.9",
        ]
        import redis

        with redis.Redis(port=server.port) as r:
            for key in keys():
                assert 0 < r.pttl(key) <= 120_000, key
    finally:
        await store.close()
