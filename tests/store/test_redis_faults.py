"""The Redis store when Redis hangs, goes away and comes back (a real redis-server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from mailmoat.limits import BREAKER_FAILURES, REDIS_POOL
from mailmoat.store import MemoryStore
from mailmoat.store.redis_store import RedisStore
from tests.support.redis import RedisServer, available, redis_server
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as srv:
        yield srv


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisStore]:
    s = RedisStore(server.url, MemoryStore(), fallback_nodes=3)
    try:
        yield s
    finally:
        await s.close()


async def test_a_hung_redis_costs_one_timeout_then_the_breaker_answers_locally(
    server: RedisServer, store: RedisStore
) -> None:
    assert await store.hit("rate:192.0.2.1", window=60, cap=100) == 1
    server.pause()
    try:
        for _ in range(BREAKER_FAILURES):  # each of these waits for a timeout
            n = await store.hit("rate:192.0.2.1", window=60, cap=100)
        hits = 1 + BREAKER_FAILURES
        # the fallback scales this node's own count by the nodes assumed (3): never lower
        # than what the cluster could have counted
        assert n == hits * 3
        assert not store.breaker.closed and store.breaker.opened == 1
        sent, fallbacks = store.calls, store.fallbacks
        for _ in range(3):  # the breaker is open: Redis is not asked
            n = await store.hit("rate:192.0.2.1", window=60, cap=100)
        hits += 3
        assert n == hits * 3
        assert store.calls == sent and store.fallbacks == fallbacks + 3
        assert await store.get("pregreet:192.0.2.1") is None  # answered, not hung
    finally:
        server.resume()
    await wait_for(lambda: store.breaker.closed, "the breaker closes once Redis answers")
    assert await store.count("rate:192.0.2.1", window=60) >= hits


async def test_a_timed_out_increment_is_not_retried(server: RedisServer, store: RedisStore) -> None:
    await store.incr("bans:192.0.2.2", ttl=60)
    server.pause()
    try:
        assert await store.incr("bans:192.0.2.2", ttl=60) == 2  # this node's own count
    finally:
        server.resume()
    await wait_for(lambda: store.breaker.closed, "Redis is back")
    # the call that timed out reached Redis and ran when it woke up: once, not twice
    with redis.Redis(port=server.port) as r:
        assert r.get("mm:bans:192.0.2.2") == b"2"


async def test_a_restart_loses_nothing_that_matters(server: RedisServer, store: RedisStore) -> None:
    for _ in range(3):
        await store.hit("dha:ip:192.0.2.3", window=60, cap=10)
    server.shutdown()
    # Redis refuses connections: answers come from the local store, fast
    assert await store.hit("dha:ip:192.0.2.3", window=60, cap=10) == min(4 * 3, 10)
    await store.set("ban:192.0.2.4", "1", ttl=60)  # a ban decided meanwhile
    assert await store.ttl("ban:192.0.2.4") is not None
    server.start()  # empty, and without the functions
    await wait_for(lambda: store.breaker.closed, "the breaker closes once Redis is back")
    # the functions were loaded again, and the ban set meanwhile was written back
    await wait_for(lambda: server.command("EXISTS", "mm:ban:192.0.2.4") == b":1", "ban replayed")
    assert server.command("FUNCTION", "LIST") != b"*0"
    # Redis lost the window; this node's own events still count (the limit recovers)
    assert await store.hit("dha:ip:192.0.2.3", window=60, cap=10) == 5
    assert await store.count("dha:ip:192.0.2.3", window=60) == 5


async def test_functions_flushed_are_reloaded(server: RedisServer, store: RedisStore) -> None:
    await store.set("pregreet:192.0.2.5", "ok", ttl=60)
    assert server.command("FUNCTION", "FLUSH") == b"+OK"
    assert server.command("SET", "mm:pregreet:192.0.2.8", "other") == b"+OK"  # not local
    assert await store.get("pregreet:192.0.2.8") == "other"  # read through mm_get, reloaded
    assert server.command("FUNCTION", "LIST") != b"*0"


async def test_a_ban_reaches_the_other_node_through_the_feed(server: RedisServer) -> None:
    a, b = RedisStore(server.url, MemoryStore()), RedisStore(server.url, MemoryStore())
    heard: list[tuple[str, float | None]] = []
    b.watch_bans(lambda name, seconds: heard.append((name, seconds)))
    try:
        await wait_for(lambda: b.feed is not None and b.feed.synced, "b's feed subscribed")
        await a.set("ban:192.0.2.6", "1", ttl=60)
        await wait_for(lambda: heard, "b heard of the ban")
        assert heard[0][0] == "192.0.2.6" and 0 < (heard[0][1] or 0) <= 60
        assert await b.local.ttl("ban:192.0.2.6") is not None  # read without asking Redis
        await a.delete("ban:192.0.2.6")
        await wait_for(lambda: len(heard) == 2, "b heard of the lifted ban")
        assert heard[1] == ("192.0.2.6", None)
        assert await b.get("ban:192.0.2.6") is None
        # a ban set while b was cut off reaches it when its feed subscribes again
        server.shutdown()
        await wait_for(lambda: not b.feed.synced, "b's feed lost")
        server.start()
        await wait_for(lambda: a.breaker.allow(), "a may call Redis")
        await asyncio.sleep(0)
        await a.set("ban:192.0.2.7", "1", ttl=60)
        await wait_for(lambda: "192.0.2.7" in [n for n, _ in heard], "resynced or pushed")
    finally:
        await a.close()
        await b.close()


def connections_to(port: int) -> int:
    """TCP sockets of this machine connected to `port` on loopback (/proc/net/tcp)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state = fields[2], fields[3]
        if int(remote.split(":")[1], 16) == port and state == "01":  # ESTABLISHED
            count += 1
    return count


async def test_a_crowd_of_calls_on_a_hung_redis_stays_within_the_pool(
    server: RedisServer, store: RedisStore
) -> None:
    await store.set("pregreet:192.0.2.40", "ok", ttl=60)
    await wait_for(lambda: store.feed is not None and store.feed.synced, "feed subscribed")
    server.pause()
    try:
        seen: list[int] = []
        crowd = [store.get(f"pregreet:192.0.2.{n}") for n in range(40, 140)]
        done = asyncio.ensure_future(asyncio.gather(*crowd))
        while not done.done():
            seen.append(connections_to(server.port))
            await asyncio.sleep(0.01)
        answers = done.result()
        # every call was answered (from the local store), none waited for Redis to wake up
        assert answers[0] == "ok" and answers[1:] == [None] * 99
        # at most REDIS_POOL at a time (the ban feed's subscription is one of them), plus
        # timed-out ones caught while they are closed and a waiter opens their replacement;
        # an unbounded pool opens one per call (101 here)
        assert max(seen) < 2 * REDIS_POOL
        assert not store.breaker.closed
    finally:
        server.resume()


async def test_an_older_library_is_replaced_at_start(server: RedisServer) -> None:
    old = "#!lua name=mailmoat\nredis.register_function('mm_get', function() return nil end)"
    client = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client.function_load(old)
        store = RedisStore(server.url, MemoryStore())
        try:
            store.watch_bans(lambda name, seconds: None)  # starts the heartbeats
            await wait_for(lambda: b"mm_slots" in str(client.function_list()).encode(), "loaded")
        finally:
            await store.close()
    finally:
        client.close()


async def test_a_load_refused_by_an_acl_leaves_the_functions_there_in_use(
    server: RedisServer,
) -> None:
    first = RedisStore(server.url, MemoryStore())
    try:
        await first.load()  # an administrator loaded them; the node's user may only call them
    finally:
        await first.close()
    rule = "ACL SETUSER mm on >secret ~* &* +@all -function"
    assert server.command(*rule.split()) == b"+OK"
    store = RedisStore(f"redis://mm:secret@127.0.0.1:{server.port}/0", MemoryStore())
    try:
        store.watch_bans(lambda name, seconds: None)
        await wait_for(lambda: store.live_nodes == 1 and store.live != [], "a heartbeat")
        assert store.breaker.closed and store.fallbacks == 0
        assert await store.hit("rate:192.0.2.9", 60, 10) == 1
        assert server.command("ZCARD", "mm:rate:192.0.2.9") == b":1"  # through Redis
    finally:
        await store.close()


async def test_a_store_closed_while_it_starts_stops(server: RedisServer) -> None:
    # redis-py can turn the CancelledError of a call into a ConnectionError: the heartbeat
    # and the feed loops caught it as a failed call and went on, and close waited for ever
    for i in range(20):
        store = RedisStore(server.url, MemoryStore())
        store.watch_bans(lambda name, seconds: None)
        await asyncio.sleep(0.002 * (i % 10))  # at a different step of the start each time
        await asyncio.wait_for(store.close(), 10)
        assert not store._tasks
