"""Admission at accept time, before any DNS lookup, greeting or buffer.

In order: the allow and deny lists (the most specific network decides; `only_accept_from`
refuses everyone not allowed), bans this node knows about, the global connection cap, the
concurrent connections of the address and of its /24 (IPv4) or /64 (IPv6) network, and a
connection-rate block this node already decided. All of that is local state, so a refusal is
synchronous: the session writes one prebuilt `421 4.7.0` line and closes, with no engine, no
timer and no task. Only a client that passes goes on to the shared state in the store: one
sliding-window hit for the connection rate and, when the local "not banned" answer is stale,
one ban lookup. With a store shared by several nodes (`SharedSlots`, Redis) the connection
rate and the cluster's count of the address's and the network's open connections are
answered at once too, from this node's counts plus the other nodes' as last heard (late by
`SLOTS_REPORT_DELAY` and a Redis round trip at most: docs/several-nodes.md); this node's
counts are sent without waiting, so accepting a connection never waits on Redis.

Clients in `admission.allow_networks` (the internal network, or the filtering service that
relays to us) are marked `trusted` and skip every limit here (they count only towards the
total that stress mode watches). The connection count also drives stress mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmoat.config import Settings
from mailmoat.limits import RATE_BLOCKED_CACHE, RATE_RECHECK
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Check, Client, Decision, HookResult, Verdict
from mailmoat.policy.networks import ExpiringCache, NetworkSet, address_key, network_key
from mailmoat.policy.stress import Stress
from mailmoat.smtp.replies import Reply, reply
from mailmoat.stats import Stats
from mailmoat.store import Store
from mailmoat.store.base import SharedSlots

_COUNTED = "admission.counted"


class Admission(Check):
    name = "admission"

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bans: BanList,
        stress: Stress,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        a = settings.admission
        self.settings = a
        self.store = store
        self.bans = bans
        self.stress = stress
        self.stats = stats
        self.clock = clock
        self.allow = NetworkSet(a.allow_networks)
        self.deny = NetworkSet(a.deny_networks)
        self.lists = bool(self.allow or self.deny)
        self.max_connections = a.max_connections
        self.connections = 0
        self.peak = 0
        self.per_ip: dict[int, int] = {}
        self.per_net: dict[int, int] = {}
        self._rate_blocked = ExpiringCache(RATE_BLOCKED_CACHE)
        # several nodes: the caps on open connections are also checked against the cluster's
        self.slots = store if isinstance(store, SharedSlots) else None
        host = settings.server.hostname

        def r(text: str) -> Reply:
            return reply(421, "4.7.0", f"{host} {text}")

        texts = {
            "denied": r("Error: access denied"),
            "not_allowed": r("Error: this server accepts mail only from its relays"),
            "max_connections": r("Error: too many connections, try again later"),
            "max_per_ip": r("Error: too many connections from your address"),
            "max_per_network": r("Error: too many connections from your network"),
            "rate": r("Error: too many connections per minute from your address"),
            "banned": r("Error: your address is temporarily blocked, try again later"),
        }
        # Prebuilt, each naming its reason for the log line of the refusal.
        self.replies = {k: Decision(reply=v, reason=k) for k, v in texts.items()}
        stats.gauge("connections.active", lambda: self.connections)
        stats.gauge("connections.max", lambda: self.max_connections)
        stats.gauge("connections.peak", lambda: self.peak)
        stats.gauge("connections.addresses", lambda: len(self.per_ip))

    # ------------------------------------------------------------------- hooks
    def connect(self, client: Client) -> HookResult:
        ip = client.ip
        a = self.settings
        if self.lists:
            allowed = self.allow.longest(ip)
            denied = self.deny.longest(ip)
            if denied >= 0 and denied >= allowed:
                return self._refuse("denied")
            client.trusted = allowed >= 0
        if a.only_accept_from and not client.trusted:
            return self._refuse("not_allowed")
        if client.trusted:
            self._count(client, None, None)
            return None
        addr = str(ip)
        if self.bans.banned_now(addr) or self.bans.network_banned(ip):
            return self._refuse("banned")
        if self.connections >= self.max_connections:
            return self._refuse("max_connections")
        ip_key = address_key(ip)
        limit = self.stress.settings.max_per_ip if self.stress.active else a.max_per_ip
        if self.per_ip.get(ip_key, 0) >= limit:
            self.bans.strike(addr, "max_per_ip")
            return self._refuse("max_per_ip")
        net_key = network_key(ip, a.ipv4_prefix, a.ipv6_prefix)
        if self.per_net.get(net_key, 0) >= a.max_per_network:
            return self._refuse("max_per_network")
        if self._rate_blocked.live(ip_key, self.clock()):
            self.bans.strike(addr, "rate")
            return self._refuse("rate")
        self._count(client, ip_key, net_key)
        if self.slots is not None:
            refused = self._cluster(self.slots, addr, ip_key, net_key)
            if refused is not None or not self.bans.enabled or self.bans.clear_now(addr):
                return refused
            return self._banned(addr)  # the ban feed's local copy: no Redis call
        if a.max_rate or (self.bans.enabled and not self.bans.clear_now(addr)):
            return self._shared(addr, ip_key, net_key)
        return None

    def _cluster(self, slots: SharedSlots, addr: str, ip_key: int, net_key: int) -> Decision | None:
        """The cluster-wide caps and rate, decided at once (`SharedSlots`)."""
        a = self.settings
        limit = self.stress.settings.max_per_ip if self.stress.active else a.max_per_ip
        if slots.slots_now(f"slots:ip:{ip_key}", self.per_ip.get(ip_key, 0)) > limit:
            self.bans.strike(addr, "max_per_ip")
            return self._refuse("max_per_ip")
        own = self.per_net.get(net_key, 0)
        if slots.slots_now(f"slots:net:{net_key}", own) > a.max_per_network:
            return self._refuse("max_per_network")
        if a.max_rate:
            n = slots.hit_now(f"rate:{addr}", a.rate_window, a.max_rate + 1)
            return self._rate(n, addr, ip_key)
        return None

    def _rate(self, n: int, addr: str, ip_key: int) -> Decision | None:
        a = self.settings
        if n <= a.max_rate:
            return None
        self._rate_blocked.set(ip_key, self.clock() + min(RATE_RECHECK, a.rate_window))
        self.bans.strike(addr, "rate")
        return self._refuse("rate")

    async def _banned(self, addr: str) -> Verdict:
        return self._refuse("banned") if await self.bans.banned(addr) else None

    async def _shared(self, addr: str, ip_key: int, net_key: int) -> Verdict:
        a = self.settings
        if a.max_rate:
            n = await self.store.hit(f"rate:{addr}", a.rate_window, a.max_rate + 1)
            refused = self._rate(n, addr, ip_key)
            if refused is not None:
                return refused
        if await self.bans.banned(addr):
            return self._refuse("banned")
        return None

    def disconnect(self, client: Client) -> None:
        if not client.untag(_COUNTED):
            return
        self.connections -= 1
        self.stress.observe(self.connections)
        if client.trusted:
            return
        a = self.settings
        ip = client.ip
        ip_key = address_key(ip)
        net_key = network_key(ip, a.ipv4_prefix, a.ipv6_prefix)
        _release(self.per_ip, ip_key)
        _release(self.per_net, net_key)
        if self.slots is not None:
            self.slots.report_slots(f"slots:ip:{ip_key}", self.per_ip.get(ip_key, 0))
            self.slots.report_slots(f"slots:net:{net_key}", self.per_net.get(net_key, 0))

    # -------------------------------------------------------------- mechanics
    def _count(self, client: Client, ip_key: int | None, net_key: int | None) -> None:
        """Take the slots; trusted clients count only towards the total (and stress)."""
        client.tag(_COUNTED)
        self.connections += 1
        if self.connections > self.peak:
            self.peak = self.connections
        self.stress.observe(self.connections)
        if ip_key is not None and net_key is not None:
            self.per_ip[ip_key] = self.per_ip.get(ip_key, 0) + 1
            self.per_net[net_key] = self.per_net.get(net_key, 0) + 1

    def _refuse(self, reason: str) -> Decision:
        self.stats.incr(f"refused.{reason}")
        return self.replies[reason]


def _release(counts: dict[int, int], key: int) -> None:
    n = counts.get(key, 0) - 1
    if n > 0:
        counts[key] = n
    else:
        counts.pop(key, None)
