"""A worker process: sessions, checks and delivery for the connections a supervisor hands over.

Started by the supervisor as `python -m mailmoat.server.worker FD` with the settings as JSON
on standard input and its end of the link as descriptor FD. It listens on nothing. Each
handed-over connection arrives with what admission decided (the client's trust, its marks, a
held greeting); the worker runs the rest of the connect stage and the session. What the
defences share lives with the supervisor: the worker's store is the supervisor's
(`RemoteStore`), its strikes go there, an ended connection gives its admission slots back
there, and stress mode is switched from there. A reload comes from there too, as a `reload`
request with the validated settings. Ctrl-C reaches the whole process group, so a
worker ignores SIGINT and waits for the supervisor's "stop"; SIGTERM or a lost supervisor
stop it too, after the deliveries in flight.
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

from mailmoat import config, logs
from mailmoat.assembly import Defences, Remote
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Check, Client
from mailmoat.server.gateway import Gateway
from mailmoat.server.hold import DELIVERED, LEFT_SILENT
from mailmoat.server.link import (
    Closed,
    Failed,
    Handover,
    Link,
    Message,
    Ready,
    Stop,
    StressMode,
    Strike,
)
from mailmoat.stats import Stats
from mailmoat.store import Store
from mailmoat.store.remote import RemoteStore


# -------------------------------------------------------- worker defences
class Release(Check):
    """Gives the supervisor back the admission slots of the connections that ended: one
    message per turn of the event loop, however many ended in it (a slot is never late by
    more than that: a client that reconnects at once must find its slot free again)."""

    name = "admission"

    def __init__(self, link: Link) -> None:
        self.link = link
        self._ended: list[int] = []
        self._silent = 0  # of them, clients that left after the 220 without a word
        self._delivered: list[int] = []  # of them, sessions that had a message accepted

    def disconnect(self, client: Client) -> None:
        if client.conn_id:
            if not self._ended:
                asyncio.get_running_loop().call_soon(self._flush)
            self._ended.append(client.conn_id)
            self._silent += client.untag(LEFT_SILENT)
            if client.untag(DELIVERED):
                self._delivered.append(client.conn_id)
            client.conn_id = 0

    def _flush(self) -> None:
        ended, self._ended = self._ended, []
        silent, self._silent = self._silent, 0
        delivered, self._delivered = set(self._delivered), []
        for i in range(0, len(ended), 1000):
            part = tuple(ended[i : i + 1000])
            good = tuple(c for c in part if c in delivered)
            self.link.send(Closed(part, silent if i == 0 else 0, good))


class RemoteBans(BanList):
    """A worker's strikes go to the supervisor, which keeps the bans that admission reads."""

    def __init__(
        self,
        settings: config.BanSettings,
        store: Store,
        stats: Stats,
        clock: Callable[[], float],
        link: Link,
    ) -> None:
        super().__init__(settings, store, stats, clock)
        self.link = link

    def strike(self, addr: str, reason: str) -> None:
        if not self.enabled:
            return
        self._suspects.set(addr, self.clock() + self.settings.strike_window)
        self.link.send(Strike(addr, reason))


# ------------------------------------------------------------------ worker
class Worker:
    def __init__(self, settings: config.Settings, sock: socket.socket) -> None:
        self.stopping = asyncio.Event()
        self.grace = settings.server.drain_time  # unless the supervisor's stop says otherwise
        self.link = Link(sock, self._message, self._serve, self.stopping.set)
        self.gateway = Gateway(settings, store=RemoteStore(self.link), defences=self._defences)

    def _defences(
        self, settings: config.Settings, stats: Stats, store: Store, clock: Callable[[], float]
    ) -> Defences:
        """The defences' hooks that run in a session (their connect hooks ran in the
        supervisor), with stand-ins for admission and bans, whose state lives there."""
        bans = RemoteBans(settings.bans, store, stats, clock, self.link)
        return Defences(settings, stats, store, clock, Remote(Release(self.link), bans))

    async def run(self) -> None:
        try:
            await self.gateway.start()
        except Exception as err:
            # the supervisor says why it cannot start (a missing directory file, say)
            self.link.send(Failed(f"{err}"))
            await asyncio.sleep(0.1)  # let the message leave before the link closes
            raise SystemExit(1) from None
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        self.link.send(Ready(os.getpid()))
        await self.stopping.wait()
        await self.gateway.stop(self.grace)
        self.link.close()

    def _message(self, message: Message, sock: socket.socket | None) -> None:
        if isinstance(message, Handover):
            if sock is None:
                return
            client = Client(
                message.address, message.port, trusted=message.trusted, conn_id=message.conn_id
            )
            client.tags = message.tags
            client.waited = message.waited
            self.gateway.adopt(sock, client, message.verdict, message.greeted)
            return
        if sock is not None:
            sock.close()
        if isinstance(message, StressMode):
            self.gateway.stress.follow(message.on)
        elif isinstance(message, Stop):
            self.grace = message.grace
            self.stopping.set()

    def _serve(self, name: str, args: tuple[Any, ...]) -> Any:
        if name == "snapshot":
            return self.gateway.stats.snapshot()
        if name == "reload":
            return self._reload(bytes(args[0]))
        raise ValueError(f"unknown request {name!r}")

    async def _reload(self, data: bytes) -> str:
        """The supervisor's validated settings: new sessions here run under them."""
        await self.gateway.reload(config.Settings.model_validate_json(data))
        return "ok"


async def _main(settings: config.Settings, fd: int) -> None:
    await Worker(settings, socket.socket(fileno=fd)).run()


def main(argv: list[str]) -> None:
    # The supervisor decides about stopping and reloading (it passes a reload on over the
    # link): a terminal's ^C or hang-up reaching the whole process group must not kill a
    # worker under it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGHUP})  # blocked by the supervisor
    fd = int(argv[1])
    settings = config.Settings.model_validate_json(sys.stdin.buffer.read())
    logs.setup(settings.log)
    if settings.server.uvloop:
        try:
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        except ImportError:
            pass
    asyncio.run(_main(settings, fd))


if __name__ == "__main__":
    main(sys.argv)
