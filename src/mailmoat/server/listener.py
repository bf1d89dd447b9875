"""Listening sockets with mailmoat's own accept loop.

Why not `loop.create_server`: its accept loop takes every connection waiting in the kernel's
queue in one turn of the event loop and makes a transport and a protocol for each before it
lets anything else run. A burst of a few thousand connections (a flood, or a botnet's
reconnects) then stalls every session for a few hundred milliseconds, and each refusal pays
for a transport it never uses.

Here a listener accepts at most `BATCH` connections per turn (epoll is level-triggered, so the
rest come next turn, after the other sessions had theirs), runs admission on the bare socket,
and refuses with one `send()` of a prebuilt line and a `close()`: no transport, no protocol, no
buffer, no timer. Only an admitted client gets a transport and a session.

With a `first` test (the supervisor's: a known client, `server/lane.py`), a listener takes
every connection waiting in the kernel's queue at once (up to `DRAIN`; an accept is a few
microseconds, its admission or refusal a hundred): a known client's is admitted there and then,
the others wait in the listener's own queue and are admitted `BATCH` a turn as before. So after
a stall, a regular sender's connection does not wait behind the refusals of a flood's hundreds
that reached the kernel before it.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from mailmoat import logs
from mailmoat.limits import ACCEPT_BATCH as BATCH
from mailmoat.limits import ACCEPT_DRAIN as DRAIN
from mailmoat.limits import EMFILE_PAUSE
from mailmoat.limits import LISTEN_BACKLOG as BACKLOG


async def open_sockets(host: str, port: int) -> list[socket.socket]:
    """Bound, listening, non-blocking sockets for `host`:`port` (every address it resolves
    to; IPv6 sockets are IPv6-only, like asyncio's)."""
    try:
        return await _open_sockets(host, port)
    except OSError as err:  # one line that names the endpoint ("cannot start: ...")
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise OSError(err.errno, f"cannot listen on {where}: {err.strerror or err}") from err


async def _open_sockets(host: str, port: int) -> list[socket.socket]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    unique: list[tuple[Any, ...]] = []
    for family, kind, proto, _, address in infos:
        if (family, address) not in {(u[0], u[3]) for u in unique}:
            unique.append((family, kind, proto, address))
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, address in unique:
            if port == 0 and sockets:  # the same free port for every address of this endpoint
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Listener:
    """Accepts on its sockets and hands each connection to `accept(sock, address)`."""

    def __init__(
        self,
        sockets: list[socket.socket],
        accept: Callable[[socket.socket, tuple[str, int]], None],
        first: Callable[[str], bool] | None = None,
    ) -> None:
        self.sockets = sockets
        self._accept = accept
        self._first = first  # a client address admitted before the connections waiting
        self._waiting: deque[tuple[socket.socket, tuple[str, int]]] = deque()
        self._later: asyncio.Handle | None = None
        self._loop = asyncio.get_running_loop()
        self._paused: asyncio.TimerHandle | None = None
        self.closed = False
        self.started = False

    @property
    def accepting(self) -> bool:
        """Started, not closed, and not paused for want of descriptors (a health problem)."""
        return self.started and not self.closed and self._paused is None

    def start(self) -> None:
        self.started = True
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._ready, sock)

    def _ready(self, sock: socket.socket) -> None:
        if self._first is None:
            for _ in range(BATCH):
                got = self._take(sock)
                if got is None:
                    return
                self._accept(*got)
            return
        for _ in range(DRAIN - len(self._waiting)):
            got = self._take(sock)
            if got is None:
                break
            if self._first(got[1][0]):
                self._accept(*got)  # a known client: before those that came earlier
            else:
                self._waiting.append(got)
        if self._later is None:  # else that turn's call admits them
            self._admit_waiting()

    def _admit_waiting(self) -> None:
        """Admit up to BATCH of the connections taken from the kernel; the rest next turn."""
        self._later = None
        for _ in range(min(BATCH, len(self._waiting))):
            self._accept(*self._waiting.popleft())
        if self._waiting and not self.closed:
            self._later = self._loop.call_soon(self._admit_waiting)

    def _take(self, sock: socket.socket) -> tuple[socket.socket, tuple[str, int]] | None:
        """The next connection in the kernel's queue, or None (none there, or none possible)."""
        try:
            return sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as err:
            if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                if self._waiting:  # taken ahead: each admitted or refused frees a descriptor
                    return None
                # Out of descriptors or memory: stop accepting briefly rather than spin
                # (the connection cap is set to avoid this; the log says it happened).
                logs.event("accept_paused", logging.WARNING, error=str(err))
                self._pause()
            return None  # ECONNABORTED and friends: the client gave up, nothing to do

    def _pause(self) -> None:
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self._paused = self._loop.call_later(EMFILE_PAUSE, self._resume)

    def _resume(self) -> None:
        self._paused = None
        if not self.closed:
            self.start()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._paused is not None:
            self._paused.cancel()
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        if self._later is not None:
            self._later.cancel()
        while self._waiting:  # never admitted: nothing to give back
            self._waiting.popleft()[0].close()
