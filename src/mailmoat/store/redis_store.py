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

Admission never waits on Redis (`slots_now`, `hit_now`): it decides from this node's own
counts plus the other nodes' as last published (`peer_counts`), and its own counts go to
Redis together every `SLOTS_REPORT_DELAY`, in one pipelined round trip (one key per call).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from mailmoat import logs
from mailmoat.limits import (
    REDIS_HEARTBEAT,
    REDIS_NODE_ALIVE,
    REDIS_SLOTS_TTL,
    REDIS_TIMEOUT,
    REPLAY_MAX,
    SLOTS_REFRESH_MAX,
    SLOTS_REPORT_DELAY,
)
from mailmoat.store.ban_feed import BanFeed
from mailmoat.store.base import BAN_PREFIX
from mailmoat.store.breaker import Breaker
from mailmoat.store.memory import MemoryStore
from mailmoat.store.own_counts import OwnCounts
from mailmoat.store.peer_counts import PeerCounts
from mailmoat.store.redis_client import calls_of, connect, ms, not_loaded, stop_if_cancelled, us
from mailmoat.store.redis_functions import LIBRARY, PREFIX, SOURCE

NODES_KEY = PREFIX + "nodes"
FUNCTIONS = ("mm_slots", "mm_hit", "mm_count", "mm_get", "mm_set", "mm_ttl", "mm_del", "mm_incr")
"""The functions whose calls the stats count one by one (besides the heartbeats, mm_nodes)."""

Call = tuple[str, str, tuple[Any, ...]]
"""One function call: the function, the key (without PREFIX), the arguments."""

BanListener = Callable[[str, float | None], None]
"""Told of a ban change: the key without `ban:`, and its seconds left (None: lifted)."""


class Unavailable(Exception):
    """Redis did not answer (down, slow, breaker open): use the local store."""


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
        self.peers = PeerCounts(self.node, clock)  # the other nodes' admission counts
        self.own = OwnCounts(clock)  # this node's open connections, to send again
        self.calls = 0  # calls sent to Redis
        self.calls_by: Counter[str] = Counter()  # ... per function
        self.round_trips = 0  # calls or pipelines of calls (each waited for one answer)
        self.fallbacks = 0  # answers the local store gave instead
        self.last_error = ""
        self.feed: BanFeed | None = None  # started with the first call
        self._listeners: list[BanListener] = []
        self._pending: dict[str, tuple[str, float] | None] = {}  # ban changes to write back
        self._slots_pending: dict[str, int] = {}  # connection counts Redis has not got yet
        self._reports: dict[str, int] = {}  # connection counts, sent together
        self._hits: dict[str, tuple[float, int, int]] = {}  # key -> window, cap, events unsent
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
        self.feed = BanFeed(self.client, self.local, self.notify, self.peers, self.resend)
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
            "store.redis.round_trips": lambda: self.round_trips,
            "store.redis.peer_messages": lambda: self.peers.received,
            "store.redis.peer_events": lambda: self.peers.events_heard,
            "store.redis.peer_connections": self.peers.connections,
            "store.redis.peer_dropped": lambda: self.peers.dropped,
        } | {f"store.redis.calls.{fn}": calls_of(self.calls_by, fn) for fn in FUNCTIONS}

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
            if not not_loaded(err):
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
        self.calls_by[fn] += 1
        self.round_trips += 1
        if asyncio.current_task() is None:  # run eagerly by admission (server.eager): go on
            await asyncio.sleep(0)  # in the task it makes for the rest (timeouts need one)
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):  # a backstop to redis-py's own
                result = await self._fcall(fn, key, *args)
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(err, 1)
            raise Unavailable from err
        self._succeeded()
        return result

    async def call_batch(self, calls: list[Call]) -> list[Any]:
        """Several function calls in one pipelined round trip (each on its own key, as ever):
        their answers in order, an error as None; Unavailable as for `call`."""
        self._start()
        if not self.breaker.allow():
            self.fallbacks += len(calls)
            raise Unavailable
        self.calls += len(calls)
        self.calls_by.update(fn for fn, _, _ in calls)
        self.round_trips += 1
        try:
            async with asyncio.timeout(REDIS_TIMEOUT * 2):
                answers = await self._pipeline(calls)
                if any(not_loaded(a) for a in answers):  # those did not run: run them again
                    await self.load()
                    again = [i for i, a in enumerate(answers) if not_loaded(a)]
                    for i, a in zip(
                        again, await self._pipeline([calls[i] for i in again]), strict=True
                    ):
                        answers[i] = a
        except (RedisError, OSError, TimeoutError) as err:
            self._failed(err, len(calls))
            raise Unavailable from err
        self._succeeded()
        return [None if isinstance(a, Exception) else a for a in answers]

    async def _pipeline(self, calls: list[Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for fn, key, args in calls:
            pipe.fcall(fn, 1, PREFIX + key, *args)
        return list(await pipe.execute(raise_on_error=False))

    def _failed(self, err: BaseException, calls: int) -> None:
        self.fallbacks += calls
        self.last_error = f"{type(err).__name__}: {err}"
        if self.breaker.failure():
            tls = "SSL" in str(err) or isinstance(err.__cause__ or err.__context__, ssl.SSLError)
            action = "tls_failed" if tls else "down"  # a bad certificate or CA is not an outage
            logs.event("store", logging.ERROR, backend="redis", action=action, error=str(err))

    def _succeeded(self) -> None:
        if self.breaker.success():
            logs.event("store", logging.WARNING, backend="redis", action="up")
        if self._pending and not self._replaying:  # even if the breaker never opened
            self._replaying = True
            self._spawn(self._replay())

    # -------------------------------------------------------------------- Store
    def _scaled(self, n: int) -> int:
        return n * max(self.live_nodes, self.fallback_nodes)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        own = await self.local.incr(key, ttl, amount)
        try:
            return max(int(await self.call("mm_incr", key, ms(ttl), amount)), own)
        except Unavailable:
            return own

    async def hit(self, key: str, window: float, cap: int) -> int:
        own = await self.local.hit(key, window, cap)
        try:
            n = int(await self.call("mm_hit", key, us(window), ms(window), max(cap, 1)))
        except Unavailable:
            return min(self._scaled(own), max(cap, 1))
        return max(n, own)

    async def count(self, key: str, window: float) -> int:
        own = await self.local.count(key, window)
        try:
            return max(int(await self.call("mm_count", key, us(window))), own)
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
            await self.call("mm_set", key, value, ms(ttl), int(ban), key)
        except Unavailable:
            if ban:
                self._remember(key, (value, self.clock() + ttl))

    async def ttl(self, key: str) -> float | None:
        own = await self.local.ttl(key)
        if self._bans_local(key):
            return own
        try:
            left_ms = int(await self.call("mm_ttl", key))
        except Unavailable:
            return own
        shared = left_ms / 1000 if left_ms >= 0 else None
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
        self.own.sent(key, own)
        try:
            total = await self.call("mm_slots", key, *self._slots_args(own))
        except Unavailable:
            self._keep_report(key, own)
            return self._scaled(own)
        self._slots_pending.pop(key, None)
        return max(int(total), own)

    def slots_now(self, key: str, own: int) -> int:
        """The cluster's open connections for `key` as this node knows them now, without
        waiting: `own` (this node's, exact) plus the other nodes' as last published, or `own`
        times the number of nodes while the feed or Redis is away. `own` is sent later."""
        self._start()
        self.report_slots(key, own)
        if self._shared():
            return own + self.peers.open(key)
        return self._scaled(own)

    def hit_now(self, key: str, window: float, cap: int) -> int:
        """`hit` without waiting: this node's events in the window (the event recorded here)
        plus the other nodes' as last published, at most `cap`; this node's own times the
        number of nodes while the feed or Redis is away. The event is sent later."""
        self._start()
        own = self.local.hit_now(key, window, cap)
        _, _, unsent = self._hits.get(key, (window, cap, 0))
        if key in self._hits or len(self._hits) < REPLAY_MAX:
            self._hits[key] = (window, max(cap, 1), min(unsent + 1, max(cap, 1)))
            self._flush_soon()
        if self._shared():
            return min(own + self.peers.events(key, window), max(cap, 1))
        return min(self._scaled(own), max(cap, 1))

    def report_slots(self, key: str, own: int) -> None:
        """`slots` without waiting for the answer. Reports wait SLOTS_REPORT_DELAY and go
        together, the latest per key, unless the key's next `slots` sends its count first:
        a busy address costs one call per delay, not one per connection."""
        if key in self._reports or len(self._reports) < REPLAY_MAX:
            self._reports[key] = own
            self.own.sent(key, own)
            self._flush_soon()
        else:
            self.own.unsent(key, own)

    def resend(self) -> None:
        """Send every open-connection count of this node again (the feed resubscribed: Redis
        may have come back empty; see store/own_counts)."""
        for key, own in self.own.all():
            self.report_slots(key, own)

    def _shared(self) -> bool:
        """The other nodes' counts are heard and Redis answers."""
        return self.breaker.closed and self.feed is not None and self.feed.synced

    def _slots_args(self, own: int) -> tuple[Any, ...]:
        alive, ttl = us(REDIS_NODE_ALIVE), ms(REDIS_SLOTS_TTL)
        return (self.node, own, alive, ttl, *self.live)

    def _keep_report(self, key: str, own: int) -> None:
        if key in self._slots_pending or len(self._slots_pending) < REPLAY_MAX:
            self._slots_pending[key] = own  # sent again with the next heartbeat

    def _flush_soon(self) -> None:
        if not self._reporting:
            self._reporting = True
            self._spawn(self._report())

    async def _report(self) -> None:
        try:
            await asyncio.sleep(SLOTS_REPORT_DELAY)
            while self._reports or self._hits:
                reports, self._reports = self._reports, {}
                hits, self._hits = self._hits, {}
                await self._send(reports, hits)
        finally:
            self._reporting = False

    async def _send(self, reports: dict[str, int], hits: dict[str, tuple[float, int, int]]) -> None:
        """This node's counts, in one round trip. Events
        that could not be sent are not sent again (the outcome of a failed call is unknown)."""
        calls: list[Call] = [("mm_slots", k, self._slots_args(n)) for k, n in reports.items()]
        calls += [
            ("mm_hit", k, (us(w), ms(w), cap, n, self.node)) for k, (w, cap, n) in hits.items()
        ]
        try:
            answers = await self.call_batch(calls)
        except Unavailable:
            for key, own in reports.items():
                self._keep_report(key, own)
            return
        for key, total in zip(reports, answers[: len(reports)], strict=True):
            if total is not None:
                self._slots_pending.pop(key, None)

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
                    shared = int(await self.call("mm_ttl", key))
                    if shared < left * 1000:
                        await self.call("mm_set", key, value, ms(left), 1, key)
            except Unavailable:
                self._remember(key, change)

    async def _heartbeats(self) -> None:
        loaded = False
        while True:
            try:
                if not loaded:  # this version's functions, even over an older library
                    await self.load()
                    loaded = True
                n = await self.call(
                    "mm_nodes",
                    NODES_KEY[len(PREFIX) :],
                    self.node,
                    us(REDIS_NODE_ALIVE),
                    ms(REDIS_NODE_ALIVE * 2),
                )
                self.live = [m.decode() if isinstance(m, bytes) else str(m) for m in n]
                self.live_nodes = max(len(self.live), 1)
                self.peers.keep_nodes(self.live)
                pending, self._slots_pending = self._slots_pending, {}
                for key, own in pending.items():
                    self.report_slots(key, own)
                for key, own in self.own.due(SLOTS_REFRESH_MAX):  # lost since? (own_counts)
                    self.report_slots(key, own)
            except ResponseError as err:  # refused (an ACL): the functions already there serve
                loaded = True
                logs.event("store", logging.WARNING, backend="redis", action="load_refused",
                           error=str(err))  # fmt: skip
            except (RedisError, OSError, TimeoutError) as err:  # the first load
                self._failed(err, 1)
            except Unavailable:
                pass
            stop_if_cancelled()
            await asyncio.sleep(REDIS_HEARTBEAT)

    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
