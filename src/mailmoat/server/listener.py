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
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from mailmoat import logs
from mailmoat.limits import ACCEPT_BATCH as BATCH
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
    ) -> None:
        self.sockets = sockets
        self._accept = accept
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
        for _ in range(BATCH):
            try:
                conn, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # Out of descriptors or memory: stop accepting briefly rather than spin
                    # (the connection cap is set to avoid this; the log says it happened).
                    logs.event("accept_paused", logging.WARNING, error=str(err))
                    self._pause()
                return  # ECONNABORTED and friends: the client gave up, nothing to do
            self._accept(conn, address)

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
