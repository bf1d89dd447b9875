"""The one place where the packet filter hears of bans: the store they are written to.

Every ban, whatever made it (strikes, pregreet, harvest, the administrator), is a `ban:` key
set with its length as the time to live, and every unban deletes such a key; a worker's writes
reach the supervisor's store over its link. So the store the one process (or the supervisor)
owns is wrapped, and each such write is passed on to the filter after the store took it.
A shared store also pushes the bans other nodes make and lift (`watch_bans`); `learn` passes
those on the same way, so they reach the kernel at once rather than at the next comparison.
"""

from __future__ import annotations

from mailmoat.packetfilter.filter import PacketFilter, ban_target
from mailmoat.store.base import BAN_PREFIX, Store


class WatchedStore:
    def __init__(self, inner: Store, packet_filter: PacketFilter) -> None:
        self.inner = inner
        self.filter = packet_filter
        packet_filter.store = inner

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        return await self.inner.incr(key, ttl, amount)

    async def hit(self, key: str, window: float, cap: int) -> int:
        return await self.inner.hit(key, window, cap)

    async def count(self, key: str, window: float) -> int:
        return await self.inner.count(key, window)

    async def get(self, key: str) -> str | None:
        return await self.inner.get(key)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self.inner.set(key, value, ttl)
        net = ban_target(key)
        if net is not None:
            self.filter.add(net, ttl)

    async def ttl(self, key: str) -> float | None:
        return await self.inner.ttl(key)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)
        net = ban_target(key)
        if net is not None:
            self.filter.lift(net)

    def learn(self, name: str, seconds: float | None) -> None:
        """A ban change pushed by a shared store: the key without `ban:`, and its seconds
        left (None: lifted)."""
        net = ban_target(BAN_PREFIX + name)
        if net is None:
            return
        self.filter.stats.incr("packetfilter.pushed")
        if seconds is None:
            self.filter.lift(net)
        else:
            self.filter.add(net, seconds)

    async def bans(self, limit: int) -> list[tuple[str, float]]:
        return await self.inner.bans(limit)

    async def close(self) -> None:
        """The filter goes with the store it watches (its table deleted unless kept)."""
        await self.filter.stop()
        await self.inner.close()
