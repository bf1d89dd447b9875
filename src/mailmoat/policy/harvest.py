"""Directory harvest detection: count unknown recipients per client IP and per network over a
sliding window, and escalate.

Scores live in the Store (shared by several nodes with the Redis store): `dha:ip:<ip>` and
`dha:net:<network>`, each a sliding window of `harvest.window` seconds holding one event per
unknown recipient and per RCPT answered uniformly. For a source (IP, or its /24 or /48
network with the `network_*` thresholds):

1. score >= tarpit_after: every RCPT from it waits tarpit_delay x (score - tarpit_after + 1)
   seconds, at most tarpit_max, before its answer. Valid or not, the same wait: it is applied
   before the directory is asked.
2. score >= threshold: every RCPT gets the same `450 4.7.1`, after tarpit_max seconds, and the
   directory is not asked at all: valid and invalid addresses are answered byte for byte and
   wait for wait the same, so the attacker learns nothing more. Legitimate mail from that
   source is deferred, not lost: its server retries.
3. score >= ban_after: the source is refused at connect (421) for ban_time seconds.

Apart from that, a session is closed after `session_max_unknown` unknown recipients.
Clients in `harvest.exempt_networks` or `domains.relay_networks` are never counted or slowed
(their unknown recipients still get 550).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from ipaddress import IPv4Address, IPv6Address, ip_network
from typing import Any, TypeVar

from mailmoat import logs
from mailmoat.config import HarvestSettings
from mailmoat.limits import HARVEST_CLEAN_TRUST
from mailmoat.limits import HARVEST_KEY_CACHE as KEY_CACHE
from mailmoat.policy.base import Check, Client, Decision, HookResult, Verdict
from mailmoat.policy.networks import ExpiringCache, source_key
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply
from mailmoat.store.base import Store

R_UNIFORM = reply(450, "4.7.1", "Requested action not taken, try again later")
R_BANNED = reply(421, "4.7.0", "Too many errors from your network, try again later")
R_UNKNOWN = reply(550, "5.1.1", "Recipient address rejected: no such user")


Addr = IPv4Address | IPv6Address
T = TypeVar("T")

State = tuple[bool, int, int]
"""What the store says of a source: banned, IP score, network score."""


class HarvestDetector:
    """Scores and bans per source; the harvest check and the recipient check share one."""

    def __init__(
        self, settings: HarvestSettings, store: Store, trusted_networks: Sequence[str] = ()
    ) -> None:
        self.s = settings
        self.store = store
        self.exempt_nets = tuple(
            ip_network(n, strict=False) for n in [*settings.exempt_networks, *trusted_networks]
        )
        self._session_unknown: dict[int, int] = {}
        self._keys: dict[IPv4Address | IPv6Address, tuple[str, str]] = {}
        self._clean = ExpiringCache(KEY_CACHE)  # ip -> until: no ban, scores below the tarpit
        self._reading: dict[Addr, asyncio.Future[State]] = {}
        self._unbanned = ExpiringCache(KEY_CACHE)  # ip -> until: no ban found at connect
        self._ban_reads: dict[Addr, asyncio.Future[bool]] = {}

    # -- keys ----------------------------------------------------------------------------------

    def exempt(self, ip: IPv4Address | IPv6Address) -> bool:
        return any(ip in net for net in self.exempt_nets)

    def network(self, ip: IPv4Address | IPv6Address) -> str:
        prefix = self.s.ipv4_prefix if ip.version == 4 else self.s.ipv6_prefix
        return str(ip_network(f"{ip}/{prefix}", strict=False))

    def keys(self, client: Client) -> tuple[str, str]:
        keys = self._keys.get(client.ip)
        if keys is None:
            if len(self._keys) >= KEY_CACHE:
                self._keys.clear()
            keys = self._keys[client.ip] = (
                source_key(str(client.ip)),
                source_key(self.network(client.ip)),
            )
        return keys

    # -- the state of a source ------------------------------------------------------------------

    async def banned(self, client: Client) -> bool:
        ip_key, net_key = self.keys(client)
        get = self.store.get
        bans = await asyncio.gather(get("ban:" + ip_key), get("ban:" + net_key))
        return any(ban is not None for ban in bans)

    async def state(self, client: Client) -> State:
        """(banned, IP score, network score). Concurrent callers for one address share one
        read: when a busy source's trust runs out, its sessions ask the store once, not each."""
        return await _shared(self._reading, client.ip, lambda: self._read(client))

    async def _read(self, client: Client) -> State:
        """Bans and scores asked together: one round trip, not four in a row."""
        banned, (ip_score, net_score) = await asyncio.gather(
            self.banned(client), self.scores(client)
        )
        return (True, 0, 0) if banned else (False, ip_score, net_score)

    async def scores(self, client: Client) -> tuple[int, int]:
        ip_key, net_key = self.keys(client)
        w = self.s.window
        ip_score, net_score = await asyncio.gather(
            self.store.count(ip_key, w), self.store.count(net_key, w)
        )
        return ip_score, net_score

    async def _score(self, client: Client) -> tuple[int, int]:
        """Record one event for the client's IP and network; ban those past their limit."""
        s, store = self.s, self.store
        self._unbanned.discard(client.ip)  # it may be banned now
        ip_key, net_key = self.keys(client)
        ip_score, net_score = await asyncio.gather(
            store.hit(ip_key, s.window, s.ban_after),
            store.hit(net_key, s.window, s.network_ban_after),
        )
        for key, score, limit in (
            (ip_key, ip_score, s.ban_after),
            (net_key, net_score, s.network_ban_after),
        ):
            if score >= limit and await store.get("ban:" + key) is None:
                await store.set("ban:" + key, "1", s.ban_time)
                logs.event(
                    "harvest",
                    logging.WARNING,
                    action="ban",
                    source=key[4:],
                    score=score,
                    client=client.address,
                    seconds=s.ban_time,
                )
        for key, score, limit in (
            (ip_key, ip_score, s.threshold),
            (net_key, net_score, s.network_threshold),
        ):
            if score == limit:
                logs.event(
                    "harvest",
                    logging.WARNING,
                    action="uniform",
                    source=key[4:],
                    score=score,
                    client=client.address,
                )
        return ip_score, net_score

    # -- hooks ------------------------------------------------------------------------------------

    def trusted(self, ip: Addr) -> bool:
        """Exempt, or found clean or unbanned by this worker within HARVEST_CLEAN_TRUST: the
        connect hook answers at once, without a coroutine (the hot path of every message)."""
        now = time.monotonic()
        return self.exempt(ip) or self._clean.live(ip, now) or self._unbanned.live(ip, now)

    def clean(self, ip: Addr) -> bool:
        """Exempt, or found clean at a RCPT within HARVEST_CLEAN_TRUST: no store read at RCPT."""
        return self.exempt(ip) or self._clean.live(ip, time.monotonic())

    async def connect(self, client: Client) -> Verdict:
        """Refuse a banned source. Only its bans are read here (with Redis, the ban feed's
        local copy: the greeting never waits on Redis); its scores wait for its first RCPT.
        "Not banned" is trusted for HARVEST_CLEAN_TRUST (a ban another worker or node makes
        meanwhile meets the source at its RCPT: the uniform answer, closing), and the sessions
        of one source share one read, as for `state`."""
        ip, now = client.ip, time.monotonic()
        if self.exempt(ip) or self._clean.live(ip, now) or self._unbanned.live(ip, now):
            return None  # a source this worker found clean within HARVEST_CLEAN_TRUST
        if await _shared(self._ban_reads, ip, lambda: self.banned(client)):
            return Decision(R_BANNED, close=True)
        self._unbanned.set(ip, now + HARVEST_CLEAN_TRUST)
        return None

    async def rcpt(self, client: Client) -> Verdict:
        """Before the directory is asked: uniform answer, ban, or tarpit for a known harvester."""
        if self.exempt(client.ip):
            return None
        s = self.s
        now = time.monotonic()
        if self._clean.live(client.ip, now):  # an ordinary sender: no store round trip
            return None
        banned, ip_score, net_score = await self.state(client)
        if banned:
            return Decision(R_UNIFORM, delay=s.tarpit_max, close=True)
        if ip_score >= s.threshold or net_score >= s.network_threshold:
            ip_score, net_score = await self._score(client)
            banned = ip_score >= s.ban_after or net_score >= s.network_ban_after
            return Decision(R_UNIFORM, delay=s.tarpit_max, close=banned)
        delay = max(
            s.tarpit_delay * (ip_score - s.tarpit_after + 1) if ip_score >= s.tarpit_after else 0,
            s.tarpit_delay * (net_score - s.network_tarpit_after + 1)
            if net_score >= s.network_tarpit_after
            else 0,
        )
        if delay > 0:
            return Decision(delay=min(delay, s.tarpit_max))
        self._clean.set(client.ip, now + HARVEST_CLEAN_TRUST)
        return None

    async def unknown(self, client: Client) -> Decision:
        """The directory said the recipient does not exist: count it; 550, maybe closing."""
        count = self._session_unknown.get(id(client), 0) + 1
        self._session_unknown[id(client)] = count
        close = count >= self.s.session_max_unknown
        if not self.exempt(client.ip):
            self._clean.discard(client.ip)
            self._unbanned.discard(client.ip)
            self._reading.pop(client.ip, None)  # a read begun before this count is stale
            ip_score, net_score = await self._score(client)
            close = close or ip_score >= self.s.ban_after or net_score >= self.s.network_ban_after
        return Decision(R_UNKNOWN, close=close)

    def forget(self, client: Client) -> None:
        self._session_unknown.pop(id(client), None)


async def _shared(
    reads: dict[Addr, asyncio.Future[T]], ip: Addr, read: Callable[[], Coroutine[Any, Any, T]]
) -> T:
    """One read per address at a time: concurrent callers wait for the one in flight."""
    pending = reads.get(ip)
    if pending is None:
        pending = reads[ip] = asyncio.ensure_future(read())

        def done(finished: asyncio.Future[T]) -> None:
            if reads.get(ip) is finished:
                del reads[ip]

        pending.add_done_callback(done)
    return await asyncio.shield(pending)  # a waiter cancelled leaves the read to the others


class HarvestCheck(Check):
    """Refuses banned sources at connect and answers known harvesters before the directory is
    asked. Runs before `RecipientCheck`, which reports unknown recipients to the detector."""

    name = "harvest"

    def __init__(self, detector: HarvestDetector) -> None:
        self.detector = detector

    def connect(self, client: Client) -> HookResult:
        if self.detector.trusted(client.ip):
            return None  # synchronous: no coroutine, no task in the session for it
        return self.detector.connect(client)

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        if self.detector.clean(client.ip):
            return None
        return self.detector.rcpt(client)

    def disconnect(self, client: Client) -> None:
        self.detector.forget(client)
