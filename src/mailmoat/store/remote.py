"""A worker's view of the supervisor's store: every call is one request over the worker's link.

The worker processes of one node share their bans, rates, windows and caches through the
supervisor, which holds the real store; so a limit counted in one worker holds in all of them.
A supervisor that does not answer (`TIMEOUT`) makes the call raise, which the callers turn
into a temporary failure (invariant 6), never into an accept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailmoat.limits import REMOTE_STORE_TIMEOUT as TIMEOUT

if TYPE_CHECKING:
    from mailmoat.server.link import Link


OPERATIONS = frozenset({"incr", "hit", "count", "get", "set", "ttl", "delete", "bans"})
"""The Store methods a worker may call (the supervisor serves nothing else)."""


class RemoteStore:
    def __init__(self, link: Link) -> None:
        self.link = link

    async def _call(self, op: str, *args: Any) -> Any:
        return await self.link.request("store", op, *args, timeout=TIMEOUT)

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        return int(await self._call("incr", key, ttl, amount))

    async def hit(self, key: str, window: float, cap: int) -> int:
        return int(await self._call("hit", key, window, cap))

    async def count(self, key: str, window: float) -> int:
        return int(await self._call("count", key, window))

    async def get(self, key: str) -> str | None:
        value = await self._call("get", key)
        return None if value is None else str(value)

    async def set(self, key: str, value: str, ttl: float) -> None:
        await self._call("set", key, value, ttl)

    async def ttl(self, key: str) -> float | None:
        value = await self._call("ttl", key)
        return None if value is None else float(value)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def bans(self, limit: int) -> list[tuple[str, float]]:
        return [(str(k), float(t)) for k, t in await self._call("bans", limit)]

    async def close(self) -> None:
        return None  # the supervisor owns the store
