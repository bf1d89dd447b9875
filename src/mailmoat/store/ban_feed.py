"""Bans pushed between nodes: every node subscribes to the ban channel of the Redis store.

A ban written or lifted through the store's functions is published on `CHANNEL`; each node's
feed copies it into its local store and tells its listeners (the ban list, which refuses the
address at the next accept without asking anyone). Admission never waits on Redis for a ban,
and a ban decided on one node is enforced on the others as soon as the message arrives
(milliseconds on a LAN).

A feed that (re)subscribes first reads the running bans from Redis (`SCAN` of `mm:ban:*`, at
most `BAN_RESYNC_MAX`), so that none published while it was away is missed; only then are ban
reads answered locally (`synced`). A ban lifted while a node was cut off stays on that node
until it expires or is lifted again.

The same subscription carries the other nodes' admission counts (`COUNTS_CHANNEL`, given a
`PeerCounts`); those heard before a lost connection are forgotten when it is made again, and
read back from Redis. Then `resynced` is called: this node sends its own counts again, which
a Redis that restarted empty no longer holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from mailmoat import logs
from mailmoat.limits import (
    BAN_FEED_RETRY,
    BAN_RESYNC_BATCH,
    BAN_RESYNC_MAX,
    REDIS_HEARTBEAT,
    REDIS_TIMEOUT,
)
from mailmoat.store.base import BAN_PREFIX
from mailmoat.store.memory import MemoryStore
from mailmoat.store.peer_counts import PeerCounts
from mailmoat.store.redis_client import stop_if_cancelled
from mailmoat.store.redis_functions import CHANNEL, COUNTS_CHANNEL, PREFIX

COUNTS = COUNTS_CHANNEL.encode()


class BanFeed:
    """Copies the bans published on `CHANNEL` into `local` and calls `notify(key, seconds)`
    (None: lifted) for each."""

    def __init__(
        self,
        client: aioredis.Redis,
        local: MemoryStore,
        notify: Callable[[str, float | None], None],
        counts: PeerCounts | None = None,
        resynced: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.local = local
        self.notify = notify
        self.counts = counts
        self.resynced = resynced
        self.synced = False
        self.received = 0  # ban changes applied from the channel

    async def run(self) -> None:
        while True:
            pubsub = self.client.pubsub()
            try:
                counts = self.counts
                await pubsub.subscribe(CHANNEL, *([COUNTS_CHANNEL] if counts else []))
                await self._resync()
                if counts is not None:
                    counts.clear()
                    await self._resync_counts(counts)
                if self.resynced is not None:
                    self.resynced()
                self.synced = True
                while True:
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=REDIS_HEARTBEAT
                    )
                    if message is None or message.get("type") != "message":
                        continue
                    if counts is not None and message.get("channel") == COUNTS:
                        counts.apply(message["data"])
                    else:
                        await self.apply(message["data"])
            except (RedisError, OSError, TimeoutError) as err:
                if self.synced:
                    logs.event(
                        "store",
                        logging.WARNING,
                        backend="redis",
                        action="feed_lost",
                        error=repr(err),
                    )
            finally:
                self.synced = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            stop_if_cancelled()
            await asyncio.sleep(BAN_FEED_RETRY)

    async def apply(self, data: bytes | str) -> None:
        """One published change: `set <key> <ms> <value>` or `del <key>`."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        parts = text.split("\t", 3)
        key = parts[1] if len(parts) > 1 else ""
        if not key.startswith(BAN_PREFIX):
            return
        local = self.local
        if parts[0] == "set" and len(parts) == 4 and parts[2].isascii() and parts[2].isdigit():
            seconds = int(parts[2]) / 1000
            await local.set(key, parts[3], seconds)
            self.notify(key, seconds)
        elif parts[0] == "del":
            await local.delete(key)
            self.notify(key, None)
        else:
            return
        self.received += 1

    async def _scan(self, match: str, limit: int) -> list[list[bytes]]:
        """Up to `limit` keys matching `match`, in batches of BAN_RESYNC_BATCH (a pipeline each)."""
        keys: list[bytes] = []
        async for key in self.client.scan_iter(match=match, count=1000):
            keys.append(key)
            if len(keys) >= limit:
                break
        return [keys[i : i + BAN_RESYNC_BATCH] for i in range(0, len(keys), BAN_RESYNC_BATCH)]

    async def _resync(self) -> None:
        client, prefix = self.client, PREFIX
        async with asyncio.timeout(REDIS_TIMEOUT * 20):
            for batch in await self._scan(prefix + BAN_PREFIX + "*", BAN_RESYNC_MAX):
                pipe = client.pipeline(transaction=False)
                for key in batch:
                    pipe.pttl(key)
                    pipe.get(key)
                answers = await pipe.execute(raise_on_error=False)
                for i, key in enumerate(batch):
                    ms, value = answers[2 * i], answers[2 * i + 1]
                    if isinstance(ms, int) and ms > 0 and isinstance(value, bytes):
                        name = key.decode("utf-8", "replace")[len(prefix) :]
                        await self.local.set(name, value.decode("utf-8", "replace"), ms / 1000)
                        self.notify(name, ms / 1000)

    async def _resync_counts(self, counts: PeerCounts) -> None:
        """The open connections Redis holds now (messages from here on are applied on top)."""
        client = self.client
        async with asyncio.timeout(REDIS_TIMEOUT * 20):
            # past PEER_COUNTS_MAX held, `counts` drops the smallest and counts them as a floor
            for batch in await self._scan(PREFIX + "slots:*", BAN_RESYNC_MAX):
                pipe = client.pipeline(transaction=False)
                for key in batch:
                    pipe.hgetall(key)
                for key, fields in zip(
                    batch, await pipe.execute(raise_on_error=False), strict=True
                ):
                    if isinstance(fields, dict):
                        counts.load(key.decode("utf-8", "replace")[len(PREFIX) :], fields)
