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
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Any

from mailmoat import logs
from mailmoat.config import BanSettings
from mailmoat.config_checks import MAPPED, plain_network
from mailmoat.limits import BAN_CACHE_SIZE as CACHE_SIZE
from mailmoat.limits import LISTED_BANS, LONGEST_BAN, MAX_NETWORK_BANS, STRIKE_COOLDOWN, WIDEST_BAN
from mailmoat.policy.base import Check, Client, HookResult
from mailmoat.policy.networks import ExpiringCache, NetworkSet, source_key
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


def ban_target(text: str) -> IPv4Network | IPv6Network:
    """An address or network to ban, or ValueError saying what is wrong with `text`. An
    IPv4-mapped address or network (::ffff:198.51.0.0/112) is given in its IPv4 form, since
    clients are matched by their IPv4 address; an IPv6 network holding mapped addresses and
    more cannot be said in IPv4 and is refused."""
    try:
        net = ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(f"not an address or network: {text!r}") from None
    _width(net)
    if isinstance(net, IPv6Network) and net.overlaps(MAPPED) and not net.subnet_of(MAPPED):
        raise ValueError(
            f"{net} holds IPv4-mapped addresses (::ffff:0:0/96) and more:"
            " ban the IPv4 network in IPv4 form"
        )
    return _width(plain_network(net))


def _width(net: IPv4Network | IPv6Network) -> IPv4Network | IPv6Network:
    if net.prefixlen < WIDEST_BAN[net.version]:
        raise ValueError(
            f"{net} is wider than /{WIDEST_BAN[net.version]}: that would shut out too much"
        )
    return net


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
        self._networks: dict[str, float] = {}  # the administrator's network bans -> end
        self._network_set = NetworkSet()

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

    def network_banned(self, ip: IPv4Address | IPv6Address) -> bool:
        """Synchronous: `ip` lies in a network the administrator banned."""
        if not self._networks:
            return False
        plen = self._network_set.longest(ip)
        if plen < 0:
            return False
        net = str(ip_network(f"{ip}/{plen}", strict=False))
        end = self._networks.get(net)
        if end is not None and end > self.clock():
            return True
        self._drop_network(net)
        return False

    # ------------------------------------------------------ the administrator's
    async def ban_manually(self, text: str, seconds: float) -> dict[str, Any]:
        """Ban an address or network for `seconds` (`mailmoat ban`); ValueError when the
        target or the length cannot be taken."""
        net = ban_target(text)
        if not 0 < seconds <= LONGEST_BAN:
            raise ValueError(f"a ban lasts more than 0 and at most {LONGEST_BAN:g} seconds")
        now = self.clock()
        if net.prefixlen == net.max_prefixlen:
            addr = str(net.network_address)
            await self.store.set(f"ban:{addr}", "admin", seconds)
            self._banned.set(addr, now + seconds)
            self._clear.discard(addr)
            target, kind = addr, "address"
        else:
            target, kind = str(net), "network"
            if target not in self._networks and len(self._networks) >= MAX_NETWORK_BANS:
                raise ValueError(f"already {MAX_NETWORK_BANS} network bans: lift some first")
            await self.store.set(f"ban:net:{target}", "admin", seconds)
            self._networks[target] = now + seconds
            self._network_set = NetworkSet(self._networks)
        self.stats.incr("bans.admin")
        logs.event("ban", logging.WARNING, client=target, seconds=seconds, reason="admin")
        return {"target": target, "kind": kind, "seconds": seconds}

    async def unban(self, text: str) -> bool:
        """Lift every ban of an address or network (strikes, harvest, the administrator's);
        whether there was one."""
        net = ban_target(text)
        if net.prefixlen == net.max_prefixlen:
            addr = str(net.network_address)
            keys = [f"ban:{addr}", "ban:" + source_key(addr)]
            self._banned.discard(addr)
            self._suspects.discard(addr)
            await self.store.delete(f"bans:{addr}")
            await self.store.delete(f"strikes:{addr}")
        else:
            keys = [f"ban:net:{net}", "ban:" + source_key(str(net))]
            self._drop_network(str(net))
        found = False
        for key in keys:
            found = await self.store.ttl(key) is not None or found
            await self.store.delete(key)
        logs.event("unban", logging.WARNING, client=str(net), found=found)
        return found

    async def listed(self) -> list[dict[str, Any]]:
        """The running bans: target, kind and seconds left, longest first."""
        out = []
        for key, left in await self.store.bans(LISTED_BANS):
            rest = key[len("ban:") :]
            if rest.startswith("net:"):
                out.append({"target": rest[4:], "kind": "network", "seconds": round(left, 1)})
            elif rest.startswith("dha:"):
                kind, _, target = rest[4:].partition(":")
                out.append({"target": target, "kind": f"harvest {kind}", "seconds": round(left, 1)})
            else:
                out.append({"target": rest, "kind": "address", "seconds": round(left, 1)})
        return out

    def learn(self, name: str, seconds: float | None) -> None:
        """A ban another node set (`seconds` left) or lifted (None), pushed by a shared
        store: the next accept of that address decides on it, without asking the store."""
        now = self.clock()
        if seconds is not None:
            seconds = min(seconds, LONGEST_BAN)
        if name.startswith("net:"):
            try:  # what Redis says is checked as the administrator's own ban would be
                net = str(ban_target(name[4:]))
            except ValueError:
                return
            if seconds is None:
                self._drop_network(net)
            elif net in self._networks or len(self._networks) < MAX_NETWORK_BANS:
                self._networks[net] = now + seconds
                self._network_set = NetworkSet(self._networks)
        elif not name.startswith("dha:"):  # harvest bans are read from the store at RCPT
            try:
                name = str(ip_address(name))
            except ValueError:
                return
            self._clear.discard(name)
            if seconds is None:
                self._banned.discard(name)
            else:
                self._banned.set(name, now + seconds)

    def _drop_network(self, net: str) -> None:
        if self._networks.pop(net, None) is not None:
            self._network_set = NetworkSet(self._networks)

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
        length = min(s.duration * 2.0 ** min(count - 1, 32), s.max_duration)
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
