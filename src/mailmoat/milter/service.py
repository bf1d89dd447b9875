"""The milter service: a listener (`milter.listen`) whose connections run `MilterSession`s.

Its checks are the gateway's own list (`assembly.build`) for the same settings, less the
pregreet test (the MTA greets its clients, not mailmoat: Postfix's postscreen does that job
beside a milter). It is built from the settings alone, with its own store and connection-level
defences unless given some, and has `start()` and `close()` like the other services.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from mailmoat import assembly, logs
from mailmoat.assembly import Defences
from mailmoat.config import Settings, split_endpoint
from mailmoat.dns import Resolver
from mailmoat.limits import MILTER_MAX_CONNECTIONS
from mailmoat.message import Spool, SpoolBudget
from mailmoat.milter.session import MilterSession, MilterState
from mailmoat.peers import PeerGate
from mailmoat.policy.base import Check, Pipeline
from mailmoat.policy.harvest import HarvestCheck
from mailmoat.server.reload import reconfigure_defences
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore, Store


class MilterService:
    name = "milter"

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        stats: Stats | None = None,
        defences: Defences | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`store`, `stats`, `defences`: a gateway's in the same process, to share its bans,
        counters and limits (default: the service's own). `resolver`: the DNS checks'."""
        self.settings = settings
        self.stats = stats if stats is not None else Stats()
        self._own_store = store is None
        self.store = (
            store if store is not None else MemoryStore.from_settings(settings.store, clock)
        )
        self._own_defences = defences is None
        self.defences = (
            defences if defences is not None else Defences(settings, self.stats, self.store, clock)
        )
        self._resolver = resolver
        self.state = self._build(settings)
        self._old: list[Pipeline] = []
        """Replaced by a reload, closed once the connections that use them have ended."""
        self._retiring: set[asyncio.Task[None]] = set()
        self._budget = SpoolBudget(settings.server.spool_memory_total)
        self.packet_budget = SpoolBudget(settings.server.spool_memory_total)
        """The packets being read, all connections together: a packet cannot spool to a
        file, so one past it closes its connection (`milter.errors.memory`)."""
        self.gate = PeerGate("milter", settings.milter.clients, self.stats)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.address: tuple[str, int] | str | None = None
        self.stats.gauge("milter.sessions", lambda: len(self._tasks))

    @property
    def pipeline(self) -> Pipeline:
        """The checks new connections run."""
        return self.state.pipeline

    def _build(self, settings: Settings) -> MilterState:
        built = assembly.build(settings, self.store, self.defences, self._resolver)
        checks: list[Check] = [c for c in built if c is not self.defences.pregreet]
        detector = next((c.detector for c in checks if isinstance(c, HarvestCheck)), None)
        return MilterState(settings, Pipeline(checks), detector)

    async def reload(self, settings: Settings) -> None:
        """SIGHUP: new connections run checks built from `settings` (a new directory, new
        lists); raises, changing nothing, when they cannot start. The connections open now
        finish under the old checks, which are closed once the last of them has ended."""
        state = self._build(settings)
        front = self.defences.checks()  # shared with the old checks, started already
        try:
            for check in state.pipeline.checks:
                if all(check is not f for f in front):
                    await check.start()
        except BaseException:
            await self._close_checks(state.pipeline, front=False)
            raise
        if self._own_defences:  # else the host that owns them reconfigures them
            reconfigure_defences(self.defences, settings)
        old, self.state, self.settings = self.state, state, settings
        self._old.append(old.pipeline)
        task = asyncio.create_task(self._retire(old.pipeline, set(self._tasks)))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _retire(self, old: Pipeline, users: set[asyncio.Task[None]]) -> None:
        if users:
            await asyncio.wait(users)
        # dropped from `_old` only once closed: a `close()` that cancels this half-way
        # closes it (again) itself
        await self._close_checks(old, front=False)
        self._old.remove(old)

    def new_spool(self) -> Spool:
        return Spool(self.settings.server.spool_memory, self._budget)

    async def start(self) -> tuple[str, int] | str | None:
        """Listen on `milter.listen` (nothing when it is empty); returns the bound address."""
        listen = self.settings.milter.listen
        if not listen:
            return None
        await self.pipeline.start()
        if listen.startswith("/"):
            path = Path(listen)
            with contextlib.suppress(FileNotFoundError):
                if path.is_socket():
                    path.unlink()
            old = os.umask(0o117)  # the MTA's user reaches it through the group
            try:
                self._server = await asyncio.start_unix_server(self._serve, path)
            finally:
                os.umask(old)
            self.address = str(path)
        else:
            host, port = split_endpoint(listen)
            self._server = await asyncio.start_server(self._serve, host, port, reuse_address=True)
            sock: socket.socket = self._server.sockets[0]
            self.address = sock.getsockname()[:2]
        logs.event("milter listening", address=str(self.address))
        return self.address

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.gate.admits(writer):
            writer.close()
            return
        if len(self._tasks) >= MILTER_MAX_CONNECTIONS:
            self.stats.incr("milter.errors.max_connections")
            writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None and sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await MilterSession(self, reader, writer).run()
        finally:
            self._tasks.discard(task)

    async def _close_checks(self, pipeline: Pipeline, *, front: bool = True) -> None:
        """Close the checks this service made; a shared front (the gateway's defences) is
        closed by its owner, after the side services. `front=False`: keep our own front too
        (a reload's pipelines share it)."""
        keep = [] if self._own_defences and front else self.defences.checks()
        for check in reversed(pipeline.checks):
            if all(check is not f for f in keep):
                await check.close()

    async def close(self) -> None:
        """Stop listening, end the open connections (the MTA applies its default action to
        the transactions in flight), close the checks."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for task in list(self._retiring):
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        for old in self._old:
            await self._close_checks(old, front=False)
        self._old.clear()
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None
            if isinstance(self.address, str):
                with contextlib.suppress(OSError):
                    os.unlink(self.address)
            await self._close_checks(self.pipeline)
        if self._own_defences:
            await self.defences.bans.close()
        if self._own_store:
            await self.store.close()
