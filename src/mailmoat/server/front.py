"""Accepting and admitting connections: what the one-process gateway and the supervisor of
worker processes have in common.

A `Front` owns the listening sockets, the connection-level defences (allow/deny lists, bans,
the caps, rates, pregreet, tarpit, stress mode), their store and the counters. A new connection
runs the connect stage on the bare socket; a refusal is one prebuilt line and a close, and an
admitted client goes to `admitted()`: a session in this process (`Gateway`) or a worker
(`Supervisor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import resource
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from mailmoat import logs
from mailmoat.assembly import Defences, DefencesFactory
from mailmoat.config import Settings, split_endpoint
from mailmoat.config_checks import admin_token
from mailmoat.limits import FD_RESERVE, LOCAL_SESSIONS, PROXY_HEADER_TIMEOUT, PROXY_PENDING_MAX
from mailmoat.limits import HOUSEKEEPING_TICK as TICK
from mailmoat.message import Spool, SpoolBudget
from mailmoat.packetfilter.filter import from_settings as packet_filter
from mailmoat.packetfilter.watch import WatchedStore
from mailmoat.policy.base import Client, Decision, Pipeline, Verdict
from mailmoat.server import eager
from mailmoat.server.admin import AdminServer, Snapshot
from mailmoat.server.listener import Listener, open_sockets
from mailmoat.server.proxied import PROXY_LOCAL, ProxyReadError, TrustedProxies, read_header
from mailmoat.server.received import new_queue_id
from mailmoat.server.side import SideService, build_sides, service_name
from mailmoat.smtp.replies import Reply, reply
from mailmoat.smtp.writers import greeting_bytes
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore, Store

R_CONNECT_ERROR = reply(421, "4.3.0", "Error: local error, try again later")


def local_spool_share(settings: Settings) -> int:
    """The supervisor's part of server.spool_memory_total: its own few sessions' messages."""
    s = settings.server
    return min(s.spool_memory_total, LOCAL_SESSIONS * s.spool_memory)


def spool_share(settings: Settings, worker: bool) -> int:
    """This process's part of server.spool_memory_total: all of it in one process; in a
    worker, 1/server.workers of what the supervisor's own sessions leave."""
    total = settings.server.spool_memory_total
    if not worker:
        return total
    return (total - local_spool_share(settings)) // max(settings.server.workers, 1)


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Front:
    """Listeners and admission; subclasses decide what an admitted connection becomes."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Callable[[], float],
        defences: DefencesFactory | None = None,
    ) -> None:
        self.settings = settings
        self.stats = Stats()
        # the one process or the supervisor, never a worker, owns the packet filter (if any)
        self.packet_filter = None if defences else packet_filter(settings, self.stats)
        watched = store if self.packet_filter is None else WatchedStore(store, self.packet_filter)
        self.store: Store = watched
        self.defences = (defences or Defences)(settings, self.stats, watched, clock)
        self.stress = self.defences.stress
        watch = getattr(store, "watch_bans", None)
        if watch is not None:  # a shared store pushes the bans other nodes decide
            watch(self.defences.bans.learn)
            if isinstance(watched, WatchedStore):  # and to the kernel at once
                watch(watched.learn)
        self.stress.listeners.append(self._stress_changed)
        self.pipeline: Pipeline  # set by the subclass: it runs at least the defences
        self.servers: list[Listener] = []
        self.sides: list[SideService] = []
        self.admin: AdminServer | None = None
        self.loop: asyncio.AbstractEventLoop
        self._ticker: asyncio.TimerHandle | None = None
        self._next_tick = 0.0
        self.loop_lag = self.loop_lag_max = 0.0
        self._background: set[asyncio.Future[Any]] = set()
        self.stats.gauge("loop.lag_ms", lambda: round(self.loop_lag * 1000, 1))
        self.stats.gauge("loop.lag_max_ms", lambda: round(self.loop_lag_max * 1000, 1))
        if isinstance(store, MemoryStore):  # a full store shows here (a ban evicted: too small)
            self.stats.gauge("store.keys", store.__len__)
            self.stats.gauge("store.evicted_bans", lambda: store.evicted_bans)
        for name, read in getattr(store, "gauges", dict)().items():  # a shared store's own
            self.stats.gauge(name, read)
        self._greeting = greeting_bytes(settings.server.hostname)
        # a client address admitted before the connections that wait (server/listener.py)
        self.first: Callable[[str], bool] | None = None
        self._proxies = TrustedProxies(settings.server.proxy_protocol)
        self.spool_budget = SpoolBudget(spool_share(settings, defences is not None))
        self.stats.gauge("spool.memory", lambda: self.spool_budget.used)

    # ---------------------------------------------------------------- start
    async def bind(self) -> None:
        """Open the listening sockets without accepting yet: the one step that may need root
        (port 25), done before privileges are dropped (`server.privileges`)."""
        if self.servers:
            return
        try:
            for endpoint in self.settings.server.listen:
                host, port = split_endpoint(endpoint)
                sockets = await open_sockets(host, port)
                self.servers.append(Listener(sockets, self._accept, self.first))
        except OSError:
            for listener in self.servers:
                listener.close()
            self.servers.clear()
            raise

    async def listen(self) -> list[tuple[str, int]]:
        """Open the listening sockets (unless `bind` did) and start accepting; returns the
        bound (host, port)."""
        await self.bind()
        if self.packet_filter is not None:
            await self.packet_filter.start()
        bound = []
        for listener in self.servers:
            for sock in listener.sockets:
                addr = sock.getsockname()
                bound.append((addr[0], addr[1]))
            listener.start()
        return bound

    def start_ticker(self) -> None:
        self._next_tick = self.loop.time() + TICK
        self._ticker = self.loop.call_at(self._next_tick, self._tick)

    def fit_connection_cap(self, fd_limit: int, reserved: int) -> None:
        """Keep admission.max_connections under the file-descriptor limit, so accept() never
        fails with EMFILE (asyncio would then stop accepting for everyone)."""
        wanted = self.settings.admission.max_connections
        room = fd_limit - FD_RESERVE - reserved
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

    # ------------------------------------------------------------- admission
    def _accept(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """A new connection, before any transport exists. The one place that decides the
        client's address: the peer's own, or the one in the PROXY header that a trusted proxy
        (`server.proxy_protocol`) must send first."""
        if self._proxies.networks and self._proxies.trusts(address[0]):
            if self._proxies.pending >= PROXY_PENDING_MAX:
                self.stats.incr("proxy.overflow")
                sock.close()
                return
            self._proxies.pending += 1  # now: a batch of accepts must not pass the bound
            self.spawn(self._proxied(sock, address))
            return
        self._admit(sock, Client(address[0], address[1]))

    async def _proxied(self, sock: socket.socket, address: tuple[str, int]) -> None:
        """Read the PROXY header, then admit the client it names. No valid header: closed,
        logged and counted. LOCAL or UNKNOWN (the proxy's own health check): a session that
        answers EHLO, NOOP, RSET and QUIT and refuses MAIL (`Session._health_check`)."""
        try:
            header = await read_header(sock, PROXY_HEADER_TIMEOUT)
        except ProxyReadError as err:
            sock.close()
            self.stats.incr("proxy.bad_header")
            logs.event("proxy_refused", logging.WARNING, proxy=address[0], error=str(err))
            return
        except BaseException:
            sock.close()
            raise
        finally:
            self._proxies.pending -= 1
        if header.source is None:
            self.stats.incr("proxy.local")
            client = Client(address[0], address[1])  # never trusted: it gets no mail session
            client.tag(PROXY_LOCAL)
            self.admitted(sock, client, None, self._greet(sock))
            return
        self._admit(sock, Client(*header.source))

    def _admit(self, sock: socket.socket, client: Client) -> None:
        """Run the connect stage; a refusal is one line and a close, anything else goes on
        to `admitted`."""
        self.stats.incr("connections.accepted")
        address = (client.address, client.port)
        try:
            verdict = self.pipeline.run("connect", client)
        except Exception:
            logs.log.exception("connect checks failed for %s", address[0])
            self._refuse(sock, None, R_CONNECT_ERROR)
            return
        if asyncio.iscoroutine(verdict):  # with the in-memory store it is done at once
            try:
                result = eager.start(verdict)
            except Exception:
                logs.log.exception("connect checks failed for %s", address[0])
                self._refuse(sock, client, R_CONNECT_ERROR)
                return
            if isinstance(result, eager.Rest):
                self.spawn(self._settle(sock, client, result))
                return
            verdict = result
        if inspect.isawaitable(verdict):
            self.spawn(self._settle(sock, client, verdict))
        elif not self._refused(sock, client, verdict):
            self.admitted(sock, client, verdict, verdict is None and self._greet(sock))

    def _greet(self, sock: socket.socket) -> bool:
        """Write the 220 on the bare socket now, so the client reads it while its session is
        set up (in a worker, that is a hand-over away). Not for a client that already talked:
        its session refuses it for talking first."""
        try:
            if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                return False
        except BlockingIOError:
            pass
        except OSError:
            return False
        try:
            sent = sock.send(self._greeting, socket.MSG_DONTWAIT)
        except OSError:
            return False
        if sent != len(self._greeting):  # a fresh socket takes the line whole; if not, half a
            sock.shutdown(socket.SHUT_RDWR)  # greeting must not be followed by a whole one
        return True

    async def _settle(
        self,
        sock: socket.socket,
        client: Client,
        pending: Awaitable[Verdict],
        greeted: bool | None = None,
    ) -> None:
        """Finish a connect stage that needs the store (rates, bans; the socket waits in the
        kernel meanwhile). `greeted`: whether the 220 went out already (None: greet now when
        the client may go on)."""
        try:
            verdict = await pending
        except asyncio.CancelledError:
            self._refuse(sock, client, None)
            raise
        except Exception:
            logs.log.exception("connect checks failed for %s", client.address)
            self._refuse(sock, client, R_CONNECT_ERROR)
            return
        if not self._refused(sock, client, verdict):
            if greeted is None:
                greeted = verdict is None and self._greet(sock)
            self.admitted(sock, client, verdict, greeted)

    def admitted(
        self, sock: socket.socket, client: Client, verdict: Verdict, greeted: bool
    ) -> None:
        """`client` passed the connect stage; `verdict` is None or a held greeting; `greeted`:
        the 220 went out already."""
        raise NotImplementedError

    def _refused(self, sock: socket.socket, client: Client, verdict: Verdict) -> bool:
        answer = verdict.reply if isinstance(verdict, Decision) else verdict
        if answer is None or (isinstance(verdict, Decision) and verdict.delay):
            return False  # admitted (a delayed refusal is a tarpit: the session holds it)
        reason = verdict.reason if isinstance(verdict, Decision) else ""
        self._refuse(sock, client, answer, reason)
        return True

    def _refuse(
        self, sock: socket.socket, client: Client | None, answer: Reply | None, reason: str = ""
    ) -> None:
        """One prebuilt line and a close: no transport, no buffer, no timer."""
        if answer is not None:
            with contextlib.suppress(OSError):
                sock.send(wire(answer), socket.MSG_DONTWAIT)
        sock.close()
        self.stats.incr("closed.refused")
        if client is not None:
            self.pipeline.disconnect(client)
            if answer is not None:
                self.stats.offender(client.address)
            if answer is not None and logs.enabled():
                logs.event(
                    "refused",
                    session=new_queue_id(),  # the connection's only line, named as a session's
                    client=client.address,
                    command="CONNECT",
                    code=answer.code,
                    status=answer.enhanced,
                    reason=reason or "error",
                    reply=answer.text,
                )

    def new_spool(self, settings: Settings | None = None) -> Spool:
        """A spool for a DATA transaction under `settings` (a session's, else the current
        ones): stress mode keeps less of each message in memory, and all of them share this
        process's budget."""
        settings = settings or self.settings
        memory = settings.server.spool_memory
        if self.stress.active:
            memory = min(memory, settings.stress.spool_memory)
        return Spool(memory, self.spool_budget)

    # ---------------------------------------------------------- housekeeping
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
        """Stress mode switched on or off."""

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` in the background, keeping a reference until it is done."""
        fut = asyncio.ensure_future(work)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    def accepting(self) -> bool:
        if not self.settings.server.listen:  # only the side services serve
            return bool(self.sides)
        return bool(self.servers) and all(listener.accepting for listener in self.servers)

    async def start_admin(self, snapshot: Snapshot) -> None:
        """The admin endpoint (`admin.listen`), serving `snapshot` and the health checks."""
        from mailmoat.server.health import Health

        admin = self.settings.admin
        token = admin_token(admin.token_file) if admin.token_file is not None else ""
        health = Health(lambda: self.settings, self.accepting)
        self.admin = AdminServer(
            admin.listen, snapshot, health.problems, token, bans=self.defences.bans
        )
        await self.admin.start()

    async def start_sides(self) -> list[str]:
        """Start the side services the settings switch on (`server.side`); returns their
        endpoints. Raises OSError, with none left running, when one cannot start."""
        self.sides = build_sides(self.settings, self)
        bound: list[str] = []
        try:
            for service in self.sides:
                where = await service.start()
                bound += [str(w) for w in where] if isinstance(where, list) else [str(where)]
        except BaseException:
            await self.close_sides()
            raise
        return bound

    async def reload_sides(self, settings: Settings) -> list[str]:
        """Reload every side service; returns those that could not, one line each (they
        keep their old settings)."""
        failed = []
        for service in self.sides:
            reload = getattr(service, "reload", None)
            if reload is None:
                continue
            try:
                await reload(settings)
            except Exception as err:
                failed.append(f"{service_name(service)} service: {err}")
        return failed

    async def close_sides(self) -> None:
        for service in reversed(self.sides):
            try:
                await service.close()
            except Exception:
                logs.log.exception("closing the %s service", service_name(service))
        self.sides = []

    def stop_listening(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        for listener in self.servers:
            listener.close()

    async def cancel_background(self) -> None:
        pending = list(self._background)
        for fut in pending:
            fut.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


_WIRE: dict[Reply, bytes] = {}


def wire(answer: Reply) -> bytes:
    """A reply's bytes, made once: refusals at accept time send the same few lines."""
    data = _WIRE.get(answer)
    if data is None:
        data = _WIRE[answer] = answer.to_bytes()
        if len(_WIRE) > 256:
            _WIRE.clear()
    return data
