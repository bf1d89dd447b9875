"""The running gateway: settings, checks, delivery, TLS and the sessions in one place.

In one process it also owns the listening sockets and admission (`Front`). As a worker of a
supervisor (`server.workers` > 1) it listens on nothing: the supervisor admits each connection
and hands it over (`adopt`), and the defences' shared state lives with the supervisor.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailmoat import assembly, logs
from mailmoat.assembly import DefencesFactory
from mailmoat.config import ServerSettings, Settings, default_of
from mailmoat.dns import Resolver
from mailmoat.dns.resolver import Stats as DnsStats
from mailmoat.limits import ADOPTS_PER_TURN, CLOSE_BURST, CLOSE_RATE, CLOSES_PER_TURN, STRESS_SPREAD
from mailmoat.limits import RELOAD_RETIRE_POLL as RETIRE_POLL
from mailmoat.policy.base import Check, Client, Pipeline, Verdict
from mailmoat.relay import make_delivery
from mailmoat.relay.base import Delivery
from mailmoat.relay.capabilities import CapabilityCheck
from mailmoat.server.figures import watch_dns, watch_pool
from mailmoat.server.front import R_CONNECT_ERROR, Front, raise_fd_limit, wire
from mailmoat.server.hold import VOUCHED
from mailmoat.server.host import HostState
from mailmoat.server.reload import reconfigure_defences
from mailmoat.server.session import SmtpSession
from mailmoat.server.tls import tls_context
from mailmoat.store import Store, open_store

if TYPE_CHECKING:
    from mailmoat.server.admin import AdminServer

__all__ = ["Gateway", "tls_context"]


class Gateway(Front):
    def __init__(
        self,
        settings: Settings,
        *,
        delivery: Delivery | None = None,
        checks: list[Check] | None = None,
        store: Store | None = None,
        clock: Callable[[], float] = time.monotonic,
        defences: DefencesFactory | None = None,
        resolver: Resolver | None = None,
        extra_checks: list[Check] | None = None,
    ) -> None:
        """`defences` makes the connection-level defences; a worker's come from the
        supervisor (their connect stage ran there, so it is left out here). `checks` replaces
        the assembly's checks (kept as they are by a reload); `extra_checks` follow them.
        `resolver` serves the DNS checks (default: one from the settings)."""
        store = store if store is not None else open_store(settings.store, clock)
        super().__init__(settings, store, clock, defences)
        self._resolver = resolver
        self._dns_stats = resolver.stats if resolver is not None else DnsStats()
        self.worker = defences is not None
        self._fixed_checks = checks
        self._extra_checks = extra_checks or []
        delivery = delivery if delivery is not None else make_delivery(settings)
        self.state: HostState
        self._install(
            HostState(
                settings,
                self.session_pipeline(self._checks(settings), delivery),
                delivery,
                tls_context(settings),
            )
        )
        self.sessions: set[SmtpSession] = set()
        self.admin: AdminServer | None = None
        self._close_cursor = 0.0  # the next free place in the deadline-close queue
        self._turn_closes = 0  # deadline closes in this turn of the event loop
        self._adopting: deque[tuple[socket.socket, Client, Verdict, bool]] = deque()
        self._retiring: list[HostState] = []  # replaced by a reload, still used by sessions
        self.stats.gauge("sessions", lambda: len(self.sessions))
        watch_pool(self.stats, lambda: self.delivery)
        watch_dns(self.stats, self._dns_stats)

    def _checks(self, settings: Settings) -> list[Check]:
        if self._fixed_checks is not None:
            return self._fixed_checks
        resolver = self._resolver
        if resolver is None and settings.dns.checks:  # one tally across reloads (/metrics)
            resolver = Resolver(settings.dns, stats=self._dns_stats)
        built = assembly.build(settings, self.store, self.defences, resolver)
        return [*built, *self._extra_checks]

    def _install(self, state: HostState) -> None:
        """`state` is what new sessions and connections get from now on."""
        self.state = state
        self.settings = state.settings
        self.pipeline = state.pipeline
        self.delivery = state.delivery
        self.tls_context = state.tls_context

    def session_pipeline(self, checks: list[Check], delivery: Delivery) -> Pipeline:
        """The checks a session runs, with delivery's capability check last (as a worker, the
        connect hooks of the defences ran in the supervisor: they are skipped here)."""
        elsewhere = self.defences.checks() if self.worker else []
        return Pipeline([*checks, CapabilityCheck(delivery)], skip_connect=elsewhere)

    async def start(self) -> list[tuple[str, int]]:
        """Open the listening sockets (none as a worker); returns the bound (host, port)."""
        self.loop = asyncio.get_running_loop()
        fd_limit = raise_fd_limit()
        if not self.worker:
            self.fit_connection_cap(fd_limit, self.settings.relay.pool_size)
        await self.pipeline.start()
        if self.settings.server.listen or self.worker:  # else only side services: no mail
            await self.delivery.start()
        bound = [] if self.worker else await self.listen()
        sides = [] if self.worker else await self.start_sides()
        if self.settings.admin.listen and not self.worker:
            await self.start_admin(self.stats.snapshot)
        self.start_ticker()
        if not self.worker:
            logs.event(
                "listening",
                addresses=[f"{h}:{p}" for h, p in bound],
                downstream=self.settings.relay.downstream
                or f"maildir:{self.settings.maildir.path}",
                domains=self.settings.domains.local,
                max_connections=self.defences.admission.max_connections,
                admin=self.settings.admin.listen or None,
                side=sides or None,
            )
        return bound

    # --------------------------------------------------------------- reload
    async def reload(self, settings: Settings) -> list[str]:
        """Build the state for `settings` as the start does and give it to new sessions;
        the sessions in flight keep theirs. Raises, and changes nothing, when the new state
        cannot be built (a certificate that does not load, a bad directory file)."""
        old = self.state
        same_relay = (
            settings.relay == old.settings.relay and settings.maildir == old.settings.maildir
        )
        delivery = old.delivery if same_relay else make_delivery(settings)
        pipeline = self.session_pipeline(self._checks(settings), delivery)
        new_checks = [c for c in pipeline.checks if all(c is not o for o in old.pipeline.checks)]
        try:
            context = tls_context(settings)
            for check in new_checks:
                await check.start()
            if delivery is not old.delivery:
                await delivery.start()
        except BaseException:
            await _close_quietly(new_checks, None if same_relay else delivery)
            raise
        reconfigure_defences(self.defences, settings)
        self._install(HostState(settings, pipeline, delivery, context))
        self._retiring.append(old)
        self.spawn(self._retire(old))
        return await self.reload_sides(settings)

    async def _retire(self, old: HostState) -> None:
        """Close what only `old` used once no session runs under it any more (looked at after
        a pause first: a session made just before the reload joins `sessions` a loop turn
        after it took its state). `stop` closes what is still retiring then."""
        await asyncio.sleep(RETIRE_POLL)
        while any(s.state is old for s in self.sessions):
            await asyncio.sleep(RETIRE_POLL)
        await self._close_retired(old)

    async def _close_retired(self, old: HostState) -> None:
        if old not in self._retiring:
            return
        self._retiring.remove(old)
        in_use = [self.state, *self._retiring, *(s.state for s in self.sessions)]
        checks = [
            c for c in old.pipeline.checks if all(c not in st.pipeline.checks for st in in_use)
        ]
        unused = all(st.delivery is not old.delivery for st in in_use)
        await _close_quietly(checks, old.delivery if unused else None)

    # ------------------------------------------------------------- sessions
    def adopt(self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool) -> None:
        """A connection the supervisor admitted (and `greeted` perhaps): the rest of the
        connect stage (the checks that run in this process), then a session; at most
        ADOPTS_PER_TURN start in one turn of the event loop, in the order they came (one
        from an address the supervisor vouches for, `hold.VOUCHED`, before them)."""
        if not self._adopting:
            self.loop.call_soon(self._adopt_some)
        if client.untag(VOUCHED):
            self._adopting.appendleft((sock, client, verdict, greeted))
        else:
            self._adopting.append((sock, client, verdict, greeted))

    def _adopt_some(self) -> None:
        try:
            for _ in range(min(ADOPTS_PER_TURN, len(self._adopting))):
                self._adopt_now(*self._adopting.popleft())
        finally:
            if self._adopting:
                self.loop.call_soon(self._adopt_some)

    def _adopt_now(
        self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool
    ) -> None:
        try:
            mine = self.pipeline.run("connect", client)
        except Exception:
            logs.log.exception("connect checks failed for %s", client.address)
            self._refuse(sock, client, R_CONNECT_ERROR)
            return
        if inspect.isawaitable(mine):
            self.spawn(self._settle(sock, client, _after(mine, verdict), greeted))
        elif not self._refused(sock, client, mine):
            self.admitted(sock, client, verdict if mine is None else mine, greeted)

    def admitted(
        self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool
    ) -> None:
        # the state its connect stage ran under: a reload before the session exists does not
        # give it checks that never saw its connect
        self.spawn(self._open_session(sock, client, verdict, greeted, self.state))

    async def _open_session(
        self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool, state: HostState
    ) -> None:
        """Give an admitted client a transport and a session (from here the session's
        connection_lost releases the client)."""
        try:
            # replies are whole lines written at once: no Nagle delay (uvloop sets it too)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.connect_accepted_socket(
                lambda: SmtpSession(self, client, verdict, greeted, state), sock
            )
        except asyncio.CancelledError:
            self._refuse(sock, client, None)
            raise
        except OSError:  # the client left before its session began
            sock.close()
            state.pipeline.disconnect(client)
        except Exception:  # a fault of ours: said in the log and to the client, never silent
            logs.log.exception("cannot start a session for %s", client.address)
            with contextlib.suppress(OSError):
                sock.send(wire(R_CONNECT_ERROR), socket.MSG_DONTWAIT)
            sock.close()
            state.pipeline.disconnect(client)

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

    def may_close(self) -> bool:
        """At most CLOSES_PER_TURN deadline closes per turn of the event loop: after a slow
        turn, the closes whose places in the queue came meanwhile are due together."""
        if self._turn_closes >= CLOSES_PER_TURN:
            return False
        if self._turn_closes == 0:
            self.loop.call_soon(self._new_turn)
        self._turn_closes += 1
        return True

    def _new_turn(self) -> None:
        self._turn_closes = 0

    async def stop(self, grace: float = default_of(ServerSettings, "drain_time")) -> None:
        """Stop accepting, let deliveries in flight finish (up to `grace` s), then close."""
        self.stop_listening()
        await self.close_sides()
        while self._adopting:  # handed over before the stop: served as before it
            self._adopt_now(*self._adopting.popleft())
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
        await self.cancel_background()
        for old in list(self._retiring):
            await self._close_retired(old)
        await self.delivery.close()
        await self.store.close()


async def _close_quietly(checks: list[Check], delivery: Delivery | None) -> None:
    for check in reversed(checks):
        try:
            await check.close()
        except Exception:
            logs.log.exception("closing %s after a reload", type(check).__name__)
    if delivery is not None:
        try:
            await delivery.close()
        except Exception:
            logs.log.exception("closing the old delivery after a reload")


async def _after(pending: Awaitable[Verdict], first: Verdict) -> Verdict:
    """This process's connect verdict; the supervisor's (`first`: None or a held greeting)
    when this one has nothing to say."""
    mine = await pending
    return first if mine is None else mine
