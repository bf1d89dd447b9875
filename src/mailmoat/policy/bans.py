"""Strikes and temporary bans with escalating length.

A client address earns a *strike* each time it hits a hard limit: refused for too many
connections or too high a connection rate, or a session closed for too many errors, unknown
or junk commands, talking before the greeting, pipelining abuse, non-SMTP input, or a deadline.
`bans.strikes` strikes within `bans.strike_window` ban the address for `bans.duration` seconds;
each further ban within `bans.memory` doubles the length, up to `bans.max_duration`.

Strikes and bans live in the `Store` (shared by every node): `strikes:<addr>` is a sliding
window, `bans:<addr>` counts bans for the escalation, and `ban:<addr>` exists while the ban
runs. Admission needs a verdict synchronously at accept time, so this node keeps a bounded
local copy of the bans it knows about (its own and those it read from the store), and a
"not banned" answer from the store is trusted for `bans.cache` seconds. A burst of refused
connections costs one store write per address per second, not one per connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mailmoat import logs
from mailmoat.config import BanSettings
from mailmoat.policy.base import Check, Client, HookResult
from mailmoat.policy.networks import ExpiringCache
from mailmoat.smtp.events import Rejected
from mailmoat.stats import Stats
from mailmoat.store import Store

STRIKE_REASONS = frozenset(
    {
        "max_per_ip",
        "rate",
        "too_many_errors",
        "too_many_unknown",
        "too_many_junk",
        "pregreet",
        "pipelining",
        "non_smtp",
        "timeout",
        "min_data_rate",
        "session_time",
        "stress_errors",
    }
)
"""Reasons (admission refusals and `Rejected` tokens) that count as a strike."""

STRIKE_COOLDOWN = 1.0
"""Seconds during which further strikes of one address are folded into the last one."""

CACHE_SIZE = 100_000
"""Addresses each local cache remembers at most (invariant 3)."""


class BanList(Check):
    name = "bans"

    def __init__(
        self,
        settings: BanSettings,
        store: Store,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.store = store
        self.stats = stats
        self.clock = clock
        self.enabled = settings.strikes > 0
        self._banned = ExpiringCache(CACHE_SIZE)  # addr -> ban end (this node's clock)
        self._clear = ExpiringCache(CACHE_SIZE)  # addr -> end of trust in "not banned"
        self._struck = ExpiringCache(CACHE_SIZE)  # addr -> end of the strike cooldown
        self._suspects = ExpiringCache(CACHE_SIZE)  # addr -> end of its strike window
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ verdicts
    def banned_now(self, addr: str) -> bool:
        """Synchronous: a ban this node knows about (no store access)."""
        return self._banned.live(addr, self.clock())

    def clear_now(self, addr: str) -> bool:
        """Synchronous: the store said "not banned" recently enough to trust it still."""
        return self._clear.live(addr, self.clock())

    async def banned(self, addr: str) -> bool:
        """Ask the store unless a recent "not banned" answer is still trusted."""
        if not self.enabled:
            return False
        now = self.clock()
        if self._banned.live(addr, now):
            return True
        if self._clear.live(addr, now):
            return False
        remaining = await self.store.ttl(f"ban:{addr}")
        now = self.clock()
        if remaining is not None and remaining > 0:
            self._banned.set(addr, now + remaining)
            return True
        if self.settings.cache > 0:
            self._clear.set(addr, now + self.settings.cache)
        return False

    def suspect(self, addr: str) -> bool:
        """This node saw a strike from `addr` within the strike window (tarpit candidates)."""
        return self._suspects.live(addr, self.clock())

    # ------------------------------------------------------------------- strikes
    def strike(self, addr: str, reason: str) -> None:
        """Record a hard-limit hit. Synchronous and cheap: the store write runs in the
        background, at most once per address per `STRIKE_COOLDOWN`."""
        if not self.enabled:
            return
        now = self.clock()
        self._suspects.set(addr, now + self.settings.strike_window)
        if self._struck.live(addr, now) or self._banned.live(addr, now):
            return
        self._struck.set(addr, now + STRIKE_COOLDOWN)
        self.stats.incr("strikes")
        self._spawn(self._record(addr, reason))

    async def _record(self, addr: str, reason: str) -> None:
        s = self.settings
        n = await self.store.hit(f"strikes:{addr}", s.strike_window, s.strikes)
        if n >= s.strikes:
            await self.ban(addr, reason)

    async def ban(self, addr: str, reason: str) -> float:
        """Ban `addr` now; returns the length in seconds (doubling with each recent ban)."""
        s = self.settings
        count = await self.store.incr(f"bans:{addr}", s.memory)
        length = min(s.duration * 2 ** min(count - 1, 32), s.max_duration)
        await self.store.set(f"ban:{addr}", str(count), length)
        await self.store.delete(f"strikes:{addr}")
        now = self.clock()
        self._banned.set(addr, now + length)
        self._clear.discard(addr)
        self.stats.incr("bans")
        logs.event("ban", logging.WARNING, client=addr, seconds=length, nth=count, reason=reason)
        return length

    def rejected(self, client: Client, event: Rejected) -> HookResult:
        if event.reason in STRIKE_REASONS and not client.trusted:
            self.strike(str(client.ip), event.reason)
        return None

    # --------------------------------------------------------------- mechanics
    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logs.event("store_error", logging.WARNING, error=repr(task.exception()))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
