"""The store of several nodes acting as one: Redis 7, through redis-py's asyncio client.

Every operation is one call of the `mailmoat` function library (`redis_functions`), on one key,
with the time taken inside Redis. The client is set up for a mail gateway, not for redis-py's
defaults: `REDIS_TIMEOUT` for connecting, for a pooled connection and for the answer; no
retries (a timed-out increment may have been applied: its outcome is unknown, and a second
try could count it twice); at most `REDIS_POOL` connections; a circuit breaker in front.

Each node keeps a local `MemoryStore` beside Redis, written on every call (a shadow of what this
node did), and answers from it when Redis fails or the breaker is open:

- windows (`hit`, `count`): this node's own events times the number of live nodes (read from
  the heartbeats, at least `store.fallback_nodes`), capped as usual: a client that spreads
  over N nodes meets the limit at about the same count, one that sticks to a node sooner.
  With Redis up the answer is the larger of Redis's and this node's own count, so a Redis
  that lost its data (a restart) never lets a client through that this node alone would stop.
- counters (`incr`, ban escalation): this node's own count.
- caches (`get`, `set`): this node's own entries.
- bans: always read from the local copy, which the ban feed (`ban_feed`) keeps in step with
  Redis (a ban written anywhere is pushed to every node); bans set or lifted while Redis was
  away are written there when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from mailmoat import logs
from mailmoat.limits import (
    REDIS_HEARTBEAT,
    REDIS_NODE_ALIVE,
    REDIS_POOL,
    REDIS_SLOTS_TTL,
    REDIS_TIMEOUT,
    REPLAY_MAX,
    SLOTS_REPORT_DELAY,
)
from mailmoat.store.ban_feed import BanFeed
from mailmoat.store.base import BAN_PREFIX
from mailmoat.store.breaker import Breaker
from mailmoat.store.memory import MemoryStore
from mailmoat.store.redis_functions import LIBRARY, PREFIX, SOURCE

NODES_KEY = PREFIX + "nodes"

BanListener = Callable[[str, float | None], None]
"""Told of a ban change: the key without `ban:`, and its seconds left (None: lifted)."""


class Unavailable(Exception):
    """Redis did not answer (down, slow, breaker open): use the local store."""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _us(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1_000_000))


def connect(url: str) -> aioredis.Redis:
    """A client with short timeouts, no retries and a bounded, blocking pool."""
    no_retry = Retry(NoBackoff(), 0)
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=REDIS_POOL,
        timeout=REDIS_TIMEOUT,
        socket_timeout=REDIS_TIMEOUT,
        socket_connect_timeout=REDIS_TIMEOUT,
        retry=no_retry,
    )
    return aioredis.Redis(connection_pool=pool, retry=no_retry)


class RedisStore:
    def __init__(
        self,
        url: str,
        local: MemoryStore,
        fallback_nodes: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = connect(url)
        self.local = local
        self.clock = clock
        self.fallback_nodes = fallback_nodes
        self.live_nodes = 1  # from the last heartbeat
        self.live: list[str] = []  # their names
        self.breaker = Breaker(clock=clock)
        self.node = f"{os.uname().nodename}:{os.getpid()}:{id(self):x}"
        self.calls = 0  # calls sent to Redis
        self.fallbacks = 0  # answers the local store gave instead
        self.last_error = ""
        self.feed: BanFeed | None = None  # started with the first call
        self._listeners: list[BanListener] = []
        self._pending: dict[str, tuple[str, float] | None] = {}  # ban changes to write back
        self._slots_pending: dict[str, int] = {}  # connection counts Redis has not got yet
        self._reports: dict[str, int] = {}  # ended connections' counts, sent together
        self._reporting = False
        self._replaying = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False

    # -------------------------------------------------------------------- start
    def watch_bans(self, listener: BanListener) -> None:
        """Call `listener` for every ban change any node makes (see `BanListener`)."""
        if listener not in self._listeners:
            self._listeners.append(listener)
        self._start()

    def _start(self) -> None:
        if self._started:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not yet: the first call starts it
        self._started = True
        self.feed = BanFeed(self.client, self.local, self.notify)
        for work in (self._heartbeats(), self.feed.run()):
            task = loop.create_task(work)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def gauges(self) -> dict[str, Callable[[], int]]:
        """What the stats show of this store: a breaker open or a feed lost is a node
        deciding on its own."""
        return {
            "store.keys": self.local.__len__,
            "store.redis.calls": lambda: self.calls,
            "store.redis.fallbacks": lambda: self.fallbacks,
            "store.redis.breaker_open": lambda: int(not self.breaker.closed),
            "store.redis.feed_synced": lambda: int(self.feed is not None and self.feed.synced),
            "store.redis.nodes": lambda: self.live_nodes,
        }

    def notify(self, name: str, seconds: float | None) -> None:
        for listener in self._listeners:
            listener(name[len(BAN_PREFIX) :], seconds)

    # ------------------------------------------------------------ calling Redis
    async def load(self) -> None:
        await self.client.function_load(SOURCE, replace=True)
        logs.event(
            "store", logging.INFO, backend="redis", action="functions_loaded", library=LIBRARY
        )

    async def _fcall(self, fn: str, key: str, *args: Any) -> Any:
        try:
            return await self.client.fcall(fn, 1, PREFIX + key, *args)
        except ResponseError as err:  # "Function not found" after a restart or FUNCTION FLUSH
            if "function not found" not in str(err).lower() and "noscript" not in str(err).lower():
                raise
        await self.load()  # the call did not run: calling once more is safe
        return await self.client.fcall(fn, 1, PREFIX + key, *args)

    async def call(self, fn: str, key: str, *args: Any) -> Any:
        """One function call, or Unavailable (no retry: a failed call's outcome is unknown)."""
        self._start()
        if not self.breaker.allow():
            self.fallbacks += 1
            raise Unavailable
        self.calls += 1
        if asyncio.current_task() is None:  # run eagerly by admission (server.eager): go on
            await asyncio.sleep(0)  # in the task it makes for the rest (timeouts need one)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):  # a backstop to redis-py's own
                result = await self._fcall(fn, key, *args)
        except (RedisError, OSError, TimeoutError) as err:
            self.fallbacks += 1
            self.last_error = f"{type(err).__name__}: {err}"
            if self.breaker.failure():
                logs.event("store", logging.ERROR, backend="redis", action="down", error=repr(err))
            raise Unavailable from err
        if self.breaker.success():
            logs.event("store", logging.WARNING, backend="redis", action="up")
        if self._pending and not self._replaying:  # even if the breaker never opened
            self._replaying = True
            self._spawn(self._replay())
        return result

    # -------------------------------------------------------------------- Store
    def _scaled(self, n: int) -> int:
        return n * max(self.live_nodes, self.fallback_nodes)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        own = await self.local.incr(key, ttl, amount)
        try:
            return max(int(await self.call("mm_incr", key, _ms(ttl), amount)), own)
        except Unavailable:
            return own

    async def hit(self, key: str, window: float, cap: int) -> int:
        own = await self.local.hit(key, window, cap)
        try:
            n = int(await self.call("mm_hit", key, _us(window), _ms(window), max(cap, 1)))
        except Unavailable:
            return min(self._scaled(own), max(cap, 1))
        return max(n, own)

    async def count(self, key: str, window: float) -> int:
        own = await self.local.count(key, window)
        try:
            return max(int(await self.call("mm_count", key, _us(window))), own)
        except Unavailable:
            return self._scaled(own)

    def _bans_local(self, key: str) -> bool:
        """Ban keys are read from the local copy, which the ban feed keeps in step."""
        return key.startswith(BAN_PREFIX) and self.feed is not None and self.feed.synced

    async def get(self, key: str) -> str | None:
        if self._bans_local(key):
            return await self.local.get(key)
        try:
            value = await self.call("mm_get", key)
        except Unavailable:
            return await self.local.get(key)
        if value is None and key.startswith(BAN_PREFIX):
            return await self.local.get(key)
        return None if value is None else value.decode("utf-8", "replace")

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.local.set(key, value, ttl)
        ban = key.startswith(BAN_PREFIX)
        try:
            await self.call("mm_set", key, value, _ms(ttl), int(ban), key)
        except Unavailable:
            if ban:
                self._remember(key, (value, self.clock() + ttl))

    async def ttl(self, key: str) -> float | None:
        own = await self.local.ttl(key)
        if self._bans_local(key):
            return own
        try:
            ms = int(await self.call("mm_ttl", key))
        except Unavailable:
            return own
        shared = ms / 1000 if ms >= 0 else None
        if shared is None or (own is not None and key.startswith(BAN_PREFIX) and own > shared):
            return own if key.startswith(BAN_PREFIX) else shared
        return shared

    async def delete(self, key: str) -> None:
        await self.local.delete(key)
        ban = key.startswith(BAN_PREFIX)
        try:
            await self.call("mm_del", key, int(ban), key)
        except Unavailable:
            if ban:
                self._remember(key, None)

    async def bans(self, limit: int) -> list[tuple[str, float]]:
        return await self.local.bans(limit)  # the feed copies every node's bans here

    async def slots(self, key: str, own: int) -> int:
        """Set this node's count of open connections for `key` to `own` (an absolute value,
        so a lost or repeated report is corrected by the next) and return the cluster's; while
        Redis cannot say, `own` times the number of nodes."""
        self._reports.pop(key, None)  # this absolute count supersedes one not sent yet
        try:
            total = await self.call(
                "mm_slots", key, self.node, own, _us(REDIS_NODE_ALIVE), _ms(REDIS_SLOTS_TTL),
                *self.live,
            )  # fmt: skip
        except Unavailable:
            if key in self._slots_pending or len(self._slots_pending) < REPLAY_MAX:
                self._slots_pending[key] = own  # sent again with the next heartbeat
            return self._scaled(own)
        self._slots_pending.pop(key, None)
        return max(int(total), own)

    def report_slots(self, key: str, own: int) -> None:
        """`slots` without waiting for the answer (a connection ended). Reports wait
        SLOTS_REPORT_DELAY and go together, the latest per key, unless the key's next
        connection sends its count first: a lower count reaching Redis late only refuses
        more, never less, and a busy address costs one call per connection, not two."""
        if key in self._reports or len(self._reports) < REPLAY_MAX:
            self._reports[key] = own
        if not self._reporting:
            self._reporting = True
            self._spawn(self._report())

    async def _report(self) -> None:
        try:
            await asyncio.sleep(SLOTS_REPORT_DELAY)
            while self._reports:
                key, own = self._reports.popitem()
                await self.slots(key, own)
        finally:
            self._reporting = False

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
        await self.client.connection_pool.disconnect()
        await self.local.close()

    # --------------------------------------------------------------- mechanics
    def _remember(self, key: str, change: tuple[str, float] | None) -> None:
        if key in self._pending or len(self._pending) < REPLAY_MAX:
            self._pending[key] = change

    async def _replay(self) -> None:
        """Write the ban changes made while Redis was away (the longer ban wins)."""
        pending, self._pending = self._pending, {}
        try:
            await self._write_back(pending)
        finally:
            self._replaying = False

    async def _write_back(self, pending: dict[str, tuple[str, float] | None]) -> None:
        for key, change in pending.items():
            try:
                if change is None:
                    await self.call("mm_del", key, 1, key)
                    continue
                value, end = change
                left = end - self.clock()
                if left > 0:
                    ms = int(await self.call("mm_ttl", key))
                    if ms < left * 1000:
                        await self.call("mm_set", key, value, _ms(left), 1, key)
            except Unavailable:
                self._remember(key, change)

    async def _heartbeats(self) -> None:
        while True:
            try:
                n = await self.call(
                    "mm_nodes",
                    NODES_KEY[len(PREFIX) :],
                    self.node,
                    _us(REDIS_NODE_ALIVE),
                    _ms(REDIS_NODE_ALIVE * 2),
                )
                self.live = [m.decode() if isinstance(m, bytes) else str(m) for m in n]
                self.live_nodes = max(len(self.live), 1)
                pending, self._slots_pending = self._slots_pending, {}
                for key, own in pending.items():
                    await self.slots(key, own)
            except Unavailable:
                pass
            await asyncio.sleep(REDIS_HEARTBEAT)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
