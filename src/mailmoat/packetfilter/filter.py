"""The packet filter: this node's bans, mirrored into the kernel so that a banned address's
new connections are dropped before they cost an accept, a socket and a 421.

The one process (or the supervisor, never a worker) owns it. It sees every ban where every ban
is made, in the store (`WatchedStore`): strikes, pregreet failures, harvest bans and the
administrator's all become a `ban:` key with a time to live, and an unban deletes it. Changes
wait for the end of the current turn of the event loop and go to the kernel together, one `nft`
call per batch (`PACKETFILTER_BATCH` updates), one call at a time. Every `PACKETFILTER_SYNC`
seconds the kernel's sets are compared with the store's bans, which brings in the bans made
and lifted on other nodes (a shared store) and repairs a batch that failed.

Banned networks may not overlap in an nftables interval set: a network that overlaps another
one already in the kernel stays out of it (mailmoat still refuses it at accept). Whatever the
kernel does not hold, mailmoat enforces itself, as it does without a packet filter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from mailmoat import logs
from mailmoat.config import Settings, split_endpoint
from mailmoat.limits import PACKETFILTER_BATCH as BATCH
from mailmoat.limits import PACKETFILTER_EXPIRY_MARGIN as EXPIRY_MARGIN
from mailmoat.limits import PACKETFILTER_MAX_ELEMENTS as MAX_ELEMENTS
from mailmoat.limits import PACKETFILTER_SYNC as SYNC
from mailmoat.packetfilter import nftables
from mailmoat.packetfilter.nftables import Net
from mailmoat.policy import bans
from mailmoat.stats import Stats
from mailmoat.store.base import BAN_PREFIX, Store


def ban_target(key: str) -> Net | None:
    """The address or network a `ban:` key bans (`ban:<ip>`, `ban:net:<cidr>`,
    `ban:dha:ip:<ip>`, `ban:dha:net:<cidr>`), None for any other key. Read as the ban list
    reads it (`policy.bans.ban_target`): an IPv4-mapped address or network is the IPv4 one,
    as the kernel sees that client."""
    if not key.startswith(BAN_PREFIX):
        return None
    rest = key[len(BAN_PREFIX) :]
    for prefix in ("net:", "dha:ip:", "dha:net:"):
        if rest.startswith(prefix):
            rest = rest[len(prefix) :]
            break
    try:
        return bans.ban_target(rest)
    except ValueError:
        return None


class PacketFilter:
    def __init__(
        self, settings: Settings, stats: Stats, clock: Callable[[], float] = time.monotonic
    ) -> None:
        p = settings.packetfilter
        self.table = p.table
        self.keep = p.keep_at_stop
        a = settings.admission
        self.meter = (a.max_rate, a.rate_window) if p.rate_meter and a.max_rate else None
        self.ports = sorted({split_endpoint(e)[1] for e in settings.server.listen})
        self.stats = stats
        self.clock = clock
        self.store: Store | None = None  # the store watched, set by WatchedStore
        self.nft = ""
        self.active = False
        self.stopped = False
        self._known: dict[Net, tuple[float, float]] = {}  # in the kernel: end, when added
        self._nets: dict[int, dict[Net, None]] = {}  # the networks of _known, by prefix length
        self._pending: dict[Net, float | None] = {}  # end of a ban to add, None: lift
        self._flush: asyncio.Task[None] | None = None
        self._sync: asyncio.Task[None] | None = None
        self._error = ""  # the last failure logged (the same one is not logged again)
        stats.gauge("packetfilter.elements", lambda: len(self._known))

    # -------------------------------------------------------------- start, stop
    async def start(self) -> None:
        """Make the table and fill it from the store; without the means to (no `nft`, no
        permission) say so in one line and leave the bans to mailmoat."""
        nft = nftables.find_nft()
        error = "nft not found" if nft is None else ""
        if nft is not None:
            error = await nftables.run(nft, nftables.create(self.table, self.ports, self.meter))
        if nft is None or error:
            logs.event(
                "packetfilter",
                logging.WARNING,
                action="off",
                table=self.table,
                error=error,
                message="cannot set up the nftables table (needs nft and CAP_NET_ADMIN);"
                " mailmoat refuses banned addresses itself",
            )
            return
        self.nft, self.active = nft, True
        try:
            await self.sync()  # the bans in the store now
        except Exception as err:  # a store that does not answer: the next comparison
            logs.event("packetfilter", logging.WARNING, action="sync", error=repr(err))
        if self._flush is not None:
            await self._flush
        self._sync = asyncio.get_running_loop().create_task(self._sync_loop())
        logs.event(
            "packetfilter",
            action="on",
            table=self.table,
            ports=self.ports,
            rate_meter=self.meter is not None,
            elements=len(self._known),
        )

    async def stop(self) -> None:
        """Stop updating; delete the table unless `packetfilter.keep_at_stop`."""
        if self.stopped:
            return
        self.stopped = True
        for task in (self._sync, self._flush):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.active and not self.keep:
            error = await nftables.run(self.nft, nftables.destroy(self.table))
            if error:
                logs.event("packetfilter", logging.WARNING, action="stop", error=error)
        self.active = False

    # ------------------------------------------------------------------ changes
    def add(self, net: Net, seconds: float) -> None:
        """A ban of `net` for `seconds` from now (queued for the next batch)."""
        end = self.clock() + seconds
        known = self._known.get(net)
        if known is not None and known[0] >= end - EXPIRY_MARGIN:
            return  # the kernel holds it as long already
        if (self._pending.get(net) or 0.0) >= end:
            return
        self._queue(net, end)

    def lift(self, net: Net) -> None:
        """The ban of `net` was lifted (queued for the next batch)."""
        if net in self._known or self._pending.get(net):
            self._queue(net, None)

    def _queue(self, net: Net, end: float | None) -> None:
        if not self.active or self.stopped:
            return
        if net not in self._pending and len(self._pending) >= MAX_ELEMENTS:
            self.stats.incr("packetfilter.dropped")
            return
        self._pending[net] = end
        if self._flush is None:
            self._flush = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        """Send what is pending, a batch per call, until nothing is (changes made meanwhile
        go in the next batch)."""
        try:
            await asyncio.sleep(0)  # the rest of this loop turn's bans join the batch
            while self._pending:
                batch = list(self._pending.items())[:BATCH]
                for net, _ in batch:
                    del self._pending[net]
                await self._apply(batch)
        finally:
            self._flush = None

    async def _apply(self, batch: list[tuple[Net, float | None]]) -> None:
        now = self.clock()
        self._prune(now)
        lift: list[Net] = []
        put: list[tuple[Net, float]] = []
        before: dict[Net, tuple[float, float] | None] = {}
        for net, end in batch:
            if end is None:
                if net in self._known:  # else not in the kernel (or a network kept out)
                    before[net] = self._known[net]
                    self._forget(net)
                    lift.append(net)
            elif end - now >= 1:
                if net not in self._known and (
                    len(self._known) >= MAX_ELEMENTS or self._overlaps(net)
                ):
                    self.stats.incr("packetfilter.skipped")
                    continue
                before[net] = self._known.get(net)
                self._remember(net, end, now)
                put.append((net, end - now))
        if not lift and not put:
            return
        error = await nftables.run(self.nft, nftables.update(self.table, lift, put))
        self.stats.incr("packetfilter.batches")
        if not error:
            self._error = ""
            self.stats.incr("packetfilter.added", len(put))
            self.stats.incr("packetfilter.lifted", len(lift))
            return
        for net, old in before.items():  # the transaction changed nothing: undo the model
            self._forget(net)
            if old is not None:
                self._remember(net, old[0], old[1])
        self.stats.incr("packetfilter.errors")
        if error != self._error:
            self._error = error
            logs.event("packetfilter", logging.WARNING, action="update", error=error)

    # ------------------------------------------------------- what the kernel has
    def _remember(self, net: Net, end: float, added: float) -> None:
        self._known[net] = (end, added)
        if net.prefixlen != net.max_prefixlen:
            self._nets.setdefault(net.prefixlen, {})[net] = None

    def _forget(self, net: Net) -> None:
        if self._known.pop(net, None) is not None and net.prefixlen != net.max_prefixlen:
            same = self._nets.get(net.prefixlen, {})
            same.pop(net, None)
            if not same:
                self._nets.pop(net.prefixlen, None)

    def _overlaps(self, net: Net) -> bool:
        """`net` overlaps a different network in the kernel's interval set."""
        if net.prefixlen == net.max_prefixlen:
            return False
        for length, nets in self._nets.items():
            if length <= net.prefixlen:
                if net.supernet(new_prefix=length) in nets:
                    return True
            elif any(n.version == net.version and n.subnet_of(net) for n in nets):  # type: ignore[arg-type]
                return True
        return False

    def _prune(self, now: float) -> None:
        for net in [n for n, (end, _) in self._known.items() if end + EXPIRY_MARGIN < now]:
            self._forget(net)

    # ------------------------------------------------------------------ syncing
    async def sync(self) -> None:
        """Compare the kernel's sets with the store's bans; queue what differs."""
        if self.store is None or not self.active:
            return
        started = self.clock()
        bans = await self.store.bans(MAX_ELEMENTS)
        now = self.clock()
        wanted: dict[Net, float] = {}
        for key, left in bans:
            net = ban_target(key)
            if net is not None:
                wanted[net] = max(wanted.get(net, 0.0), now + left)
        for net, end in wanted.items():
            self.add(net, end - now)
        if len(bans) >= MAX_ELEMENTS:
            return  # not every ban was read: none is lifted on this evidence
        for net, (end, added) in list(self._known.items()):
            if net not in wanted and added < started and end > now:
                self.lift(net)

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(SYNC)
            try:
                await self.sync()
            except Exception as err:  # a store that does not answer: next time
                logs.event("packetfilter", logging.WARNING, action="sync", error=repr(err))


def from_settings(settings: Settings, stats: Stats) -> PacketFilter | None:
    """The filter `packetfilter.backend` asks for, None for "none"."""
    if settings.packetfilter.backend == "none":
        return None
    return PacketFilter(settings, stats)
