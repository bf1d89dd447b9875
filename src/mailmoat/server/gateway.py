"""The running gateway: settings, checks, delivery, TLS and the sessions in one place.

In one process it also owns the listening sockets and admission (`Front`). As a worker of a
supervisor (`server.workers` > 1) it listens on nothing: the supervisor admits each connection
and hands it over (`adopt`), and the defences' shared state lives with the supervisor.
"""

from __future__ import annotations

import asyncio
import inspect
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mailmoat import assembly, logs
from mailmoat.assembly import DefencesFactory
from mailmoat.config import ServerSettings, Settings, default_of
from mailmoat.dns import Resolver
from mailmoat.limits import CLOSE_BURST, CLOSE_RATE, STRESS_SPREAD
from mailmoat.policy.base import Check, Client, Pipeline, Verdict
from mailmoat.relay import make_delivery
from mailmoat.relay.base import Delivery
from mailmoat.relay.capabilities import CapabilityCheck
from mailmoat.server.front import R_CONNECT_ERROR, Front, raise_fd_limit
from mailmoat.store import MemoryStore, Store

if TYPE_CHECKING:
    from mailmoat.server.admin import AdminServer
    from mailmoat.server.session import SmtpSession

__all__ = ["Gateway", "tls_context"]


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    server = settings.server
    if server.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server.tls_cert, server.tls_key)
    return ctx


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
    ) -> None:
        """`defences` makes the connection-level defences; a worker's come from the
        supervisor (their connect stage ran there, so it is left out here). `resolver` serves
        the DNS checks (default: one from the settings)."""
        store = store if store is not None else MemoryStore.from_settings(settings.store, clock)
        super().__init__(settings, store, clock, defences)
        self.delivery = delivery if delivery is not None else make_delivery(settings)
        elsewhere = self.defences.checks() if defences is not None else []
        self.pipeline = Pipeline(
            [
                *(
                    checks
                    if checks is not None
                    else assembly.build(settings, self.store, self.defences, resolver)
                ),
                CapabilityCheck(self.delivery),
            ],
            skip_connect=elsewhere,
        )
        self.worker = defences is not None
        self.tls_context = tls_context(settings)
        self.sessions: set[SmtpSession] = set()
        self.admin: AdminServer | None = None
        self._close_cursor = 0.0  # the next free place in the deadline-close queue
        self.stats.gauge("sessions", lambda: len(self.sessions))

    async def start(self) -> list[tuple[str, int]]:
        """Open the listening sockets (none as a worker); returns the bound (host, port)."""
        from mailmoat.server import session  # noqa: F401 (imported now, not at the first client)

        self.loop = asyncio.get_running_loop()
        fd_limit = raise_fd_limit()
        if not self.worker:
            self.fit_connection_cap(fd_limit, self.settings.relay.pool_size)
        await self.pipeline.start()
        await self.delivery.start()
        bound = [] if self.worker else await self.listen()
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
            )
        return bound

    # ------------------------------------------------------------- sessions
    def adopt(self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool) -> None:
        """A connection the supervisor admitted (and `greeted` perhaps): the rest of the
        connect stage (the checks that run in this process), then a session."""
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
        self.spawn(self._open_session(sock, client, verdict, greeted))

    async def _open_session(
        self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool
    ) -> None:
        """Give an admitted client a transport and a session (from here the session's
        connection_lost releases the client)."""
        from mailmoat.server.session import SmtpSession

        try:
            # replies are whole lines written at once: no Nagle delay (uvloop sets it too)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self.loop.connect_accepted_socket(
                lambda: SmtpSession(self, client, verdict, greeted), sock
            )
        except asyncio.CancelledError:
            self._refuse(sock, client, None)
            raise
        except Exception:
            sock.close()
            self.pipeline.disconnect(client)

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

    async def stop(self, grace: float = default_of(ServerSettings, "drain_time")) -> None:
        """Stop accepting, let deliveries in flight finish (up to `grace` s), then close."""
        self.stop_listening()
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
        await self.delivery.close()
        await self.store.close()


async def _after(pending: Awaitable[Verdict], first: Verdict) -> Verdict:
    """This process's connect verdict; the supervisor's (`first`: None or a held greeting)
    when this one has nothing to say."""
    mine = await pending
    return first if mine is None else mine
