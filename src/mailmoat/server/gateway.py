"""The running gateway: settings, checks, delivery, TLS and the listening sockets in one place."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import resource
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mailmoat import logs
from mailmoat.config import Settings, split_endpoint
from mailmoat.directory import build_directories
from mailmoat.policy.admission import Admission
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Check, Client, Decision, Pipeline, Verdict
from mailmoat.policy.dns_checks import build_dns_checks
from mailmoat.policy.harvest import HarvestCheck, HarvestDetector
from mailmoat.policy.pregreet import Pregreet
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.policy.relay_access import RelayAccess
from mailmoat.policy.stress import Stress
from mailmoat.policy.tarpit import Tarpit
from mailmoat.relay import make_delivery
from mailmoat.relay.base import Delivery
from mailmoat.server.listener import Listener, open_sockets
from mailmoat.smtp.replies import Reply, reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore, Store

if TYPE_CHECKING:
    from mailmoat.server.admin import AdminServer
    from mailmoat.server.session import SmtpSession

R_CONNECT_ERROR = reply(421, "4.3.0", "Error: local error, try again later")

FD_RESERVE = 64
"""File descriptors kept free for listeners, the downstream pool, spool files and logs."""

TICK = 0.25
"""Seconds between the gateway's housekeeping runs (stress mode's end, loop-lag gauge)."""

CLOSE_RATE = 4000.0
CLOSE_BURST = 40
"""Deadline closes per second, and how many may happen at once: a crowd of idle clients that
connected together and so time out together is closed at this pace (each at its own place in
the queue), so that it cannot stall everyone else."""

STRESS_SPREAD = 1.0
"""Seconds over which the sessions that stress mode's tighter deadlines catch are closed, so
that thousands of idle clients are not all closed in one turn of the event loop."""


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Defences:
    """The connection-level defences and the state they share, built once per gateway."""

    def __init__(
        self, settings: Settings, stats: Stats, store: Store, clock: Callable[[], float]
    ) -> None:
        self.stress = Stress(settings.stress, settings.admission.max_connections, stats, clock)
        self.bans = BanList(settings.bans, store, stats, clock)
        self.admission = Admission(settings, store, self.bans, self.stress, stats, clock)
        self.pregreet = Pregreet(settings, store, stats)
        self.tarpit = Tarpit(settings, self.bans, self.stress, stats)

    def checks(self) -> list[Check]:
        # Admission first: nothing else runs for a refused client. Observers of the `rejected`
        # stage (bans, pregreet) come before the tarpit, whose closing verdict ends the stage.
        return [self.admission, self.bans, self.pregreet, self.tarpit]


def default_checks(
    settings: Settings, store: Store | None = None, defences: Defences | None = None
) -> list[Check]:
    """The checks every gateway runs, in order.

    The connection-level defences come first: nothing else runs for a refused client. The DNS
    checks answer RCPT before the recipient directory is asked: a client they refuse learns
    nothing about which recipients exist, and costs the directory nothing.
    """
    store = store if store is not None else MemoryStore()
    front = defences.checks() if defences is not None else []
    checks: list[Check] = [*front, RelayAccess(settings.domains)]
    directories = build_directories(settings, store)
    detector = None
    if directories is not None and settings.harvest.enabled:
        detector = HarvestDetector(settings.harvest, store, settings.domains.relay_networks)
        checks.append(HarvestCheck(detector))
    checks += build_dns_checks(settings, store)
    if directories is not None:
        checks.append(RecipientCheck(directories, detector))
    return checks


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    server = settings.server
    if server.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server.tls_cert, server.tls_key)
    return ctx


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        delivery: Delivery | None = None,
        checks: list[Check] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        self.store: Store = (
            store if store is not None else MemoryStore(settings.store.max_keys, clock=clock)
        )
        self.defences = Defences(settings, self.stats, self.store, clock)
        self.stress = self.defences.stress
        self.stress.listeners.append(self._stress_changed)
        self.delivery = delivery if delivery is not None else make_delivery(settings)
        self.pipeline = Pipeline(
            checks if checks is not None else default_checks(settings, self.store, self.defences)
        )
        self.tls_context = tls_context(settings)
        self.sessions: set[SmtpSession] = set()
        self.servers: list[Listener] = []
        self.admin: AdminServer | None = None
        self.loop: asyncio.AbstractEventLoop
        self._ticker: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self.loop_lag = self.loop_lag_max = 0.0
        self._close_cursor = 0.0  # the next free place in the deadline-close queue
        self._background: set[asyncio.Future[Any]] = set()
        self.stats.gauge("sessions", lambda: len(self.sessions))
        self.stats.gauge("loop.lag_ms", lambda: round(self.loop_lag * 1000, 1))
        self.stats.gauge("loop.lag_max_ms", lambda: round(self.loop_lag_max * 1000, 1))

    async def start(self) -> list[tuple[str, int]]:
        """Open the listening sockets; returns the bound (host, port) pairs."""
        self.loop = loop = asyncio.get_running_loop()
        self._fit_connection_cap(raise_fd_limit())
        await self.pipeline.start()
        bound = []
        try:
            for endpoint in self.settings.server.listen:
                host, port = split_endpoint(endpoint)
                listener = Listener(await open_sockets(host, port), self._accept)
                self.servers.append(listener)
                for sock in listener.sockets:
                    addr = sock.getsockname()
                    bound.append((addr[0], addr[1]))
        except OSError:
            for listener in self.servers:
                listener.close()
            raise
        for listener in self.servers:
            listener.start()
        if self.settings.admin.listen:
            from mailmoat.server.admin import AdminServer

            self.admin = AdminServer(self.settings.admin.listen, self.stats)
            await self.admin.start()
        self._next_tick = loop.time() + TICK
        self._ticker = loop.call_at(self._next_tick, self._tick)
        logs.event(
            "listening",
            addresses=[f"{h}:{p}" for h, p in bound],
            downstream=self.settings.relay.downstream or f"maildir:{self.settings.maildir.path}",
            domains=self.settings.domains.local,
            max_connections=self.defences.admission.max_connections,
            admin=self.settings.admin.listen or None,
        )
        return bound

    # ------------------------------------------------------------- admission
    def _accept(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """A new connection, before any transport exists: run the connect stage; a refusal
        is one line and a close, anything else gets a transport and a session."""
        self.stats.incr("connections.accepted")
        try:
            client = Client(address[0], address[1])
            verdict = self.pipeline.run("connect", client)
        except Exception:
            logs.log.exception("connect checks failed for %s", address[0])
            self._refuse(sock, None, R_CONNECT_ERROR)
            return
        if inspect.isawaitable(verdict) or not self._refused(sock, client, verdict):
            self.spawn(self._admit(sock, client, verdict))

    async def _admit(
        self, sock: socket.socket, client: Client, pending: Verdict | Awaitable[Verdict]
    ) -> None:
        """Finish the connect stage if it needs the store (rates, bans; the socket waits in
        the kernel meanwhile), then give the client a transport and a session. One task."""
        from mailmoat.server.session import SmtpSession

        started = False
        try:
            if inspect.isawaitable(pending):
                verdict = await pending
                if self._refused(sock, client, verdict):
                    return
            else:
                verdict = pending
            started = True  # from here the session's connection_lost releases the client
            # replies are whole lines written at once: no Nagle delay (uvloop sets it too)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.connect_accepted_socket(
                lambda: SmtpSession(self, client, verdict), sock
            )
        except asyncio.CancelledError:
            if not started:
                self._refuse(sock, client, None)
            raise
        except Exception:
            if started:
                sock.close()
                self.pipeline.disconnect(client)
                return
            logs.log.exception("connect checks failed for %s", client.address)
            self._refuse(sock, client, R_CONNECT_ERROR)

    def _refused(self, sock: socket.socket, client: Client, verdict: Verdict) -> bool:
        answer = verdict.reply if isinstance(verdict, Decision) else verdict
        if answer is None or (isinstance(verdict, Decision) and verdict.delay):
            return False  # admitted (a delayed refusal is a tarpit: the session holds it)
        self._refuse(sock, client, answer)
        return True

    def _refuse(self, sock: socket.socket, client: Client | None, answer: Reply | None) -> None:
        """One prebuilt line and a close: no transport, no buffer, no timer."""
        if answer is not None:
            with contextlib.suppress(OSError):
                sock.send(_wire(answer), socket.MSG_DONTWAIT)
        sock.close()
        self.stats.incr("closed.refused")
        if client is not None:
            self.pipeline.disconnect(client)
            logs.event("refused", logging.DEBUG, client=client.address)

    def _fit_connection_cap(self, fd_limit: int) -> None:
        """Keep admission.max_connections under the file-descriptor limit, so accept() never
        fails with EMFILE (asyncio would then stop accepting for everyone)."""
        wanted = self.settings.admission.max_connections
        room = fd_limit - FD_RESERVE - self.settings.relay.pool_size
        if wanted > room:
            logs.event(
                "warning",
                logging.WARNING,
                message="admission.max_connections lowered to fit the file-descriptor limit",
                configured=wanted,
                used=max(room, 1),
                fd_limit=fd_limit,
            )
            self.defences.admission.max_connections = max(room, 1)
            self.stress.set_capacity(max(room, 1))

    def _tick(self) -> None:
        """Every TICK: let stress mode end when the load is gone; measure the event loop's
        lag (how late this timer ran: a busy or stalled loop answers every client late)."""
        now = self.loop.time()
        lag = max(0.0, now - self._next_tick)
        self.loop_lag = lag
        self.loop_lag_max = max(self.loop_lag_max, lag)
        self.stress.tick()
        self._next_tick = now + TICK
        self._ticker = self.loop.call_at(self._next_tick, self._tick)

    def _stress_changed(self, on: bool) -> None:
        """Tighter deadlines apply to the open sessions at once: the ones already past them
        are closed within STRESS_SPREAD seconds. (Relaxing needs nothing: a timer that fires
        before the relaxed deadline re-arms itself.)"""
        if not on or not self.sessions:
            return
        now = self.loop.time()
        step = STRESS_SPREAD / len(self.sessions)
        for i, session in enumerate(list(self.sessions)):
            session.rearm(not_before=now + i * step)

    def close_slot(self, now: float) -> float:
        """When a session that missed its deadline at `now` may be closed: now, unless more
        than CLOSE_BURST are ahead of it, then at its place in a queue served at CLOSE_RATE."""
        slot = max(self._close_cursor, now - CLOSE_BURST / CLOSE_RATE)
        self._close_cursor = slot + 1.0 / CLOSE_RATE
        return max(slot, now)

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` in the background, keeping a reference until it is done."""
        fut = asyncio.ensure_future(work)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let deliveries in flight finish (up to `grace` s), then close."""
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in self.servers:
            listener.close()
        for session in list(self.sessions):
            session.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        await self.pipeline.close()
        if self.admin is not None:
            await self.admin.stop()
        await self.defences.bans.close()
        pending = list(self._background)
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self.delivery.close()
        await self.store.close()


_WIRE: dict[Reply, bytes] = {}


def _wire(answer: Reply) -> bytes:
    """A reply's bytes, made once: refusals at accept time send the same few lines."""
    data = _WIRE.get(answer)
    if data is None:
        data = _WIRE[answer] = answer.to_bytes()
        if len(_WIRE) > 256:
            _WIRE.clear()
    return data
