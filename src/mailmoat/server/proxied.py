"""Reading a PROXY header off a bare socket, and not one octet more.

The socket is then admitted like any other (and perhaps handed to a worker process), so what
follows the header must stay in the kernel's buffer: a client that talks before the greeting
is still caught by pregreet. Each round peeks at what has arrived, asks the codec how long the
header is, and consumes only the header's part of it. (An accepted socket is blocking: every
read says MSG_DONTWAIT, as admission's do, and the socket's mode is left alone.)
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from ipaddress import ip_address

from mailmoat.policy.base import plain_ip
from mailmoat.policy.networks import NetworkSet
from mailmoat.server.proxy_header import V1_MAX, ProxyHeader, ProxyHeaderError, header_length, parse

PROXY_LOCAL = "proxy.local"
"""The tag of a LOCAL connection: the proxy's own (a health check), answered, not a client."""


class TrustedProxies:
    """The networks whose connections start with a PROXY header (`server.proxy_protocol`),
    and how many such headers are being read now."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = NetworkSet(networks)
        self.pending = 0

    def trusts(self, peer: str) -> bool:
        return plain_ip(ip_address(peer.split("%", 1)[0])) in self.networks


class ProxyReadError(Exception):
    """No valid header came (malformed, closed, or too slow): the connection must be closed."""


async def read_header(sock: socket.socket, timeout: float) -> ProxyHeader:
    """The PROXY header at the start of `sock`'s input, read within `timeout` seconds."""
    loop = asyncio.get_running_loop()
    buffer = b""
    try:
        async with asyncio.timeout(timeout):
            while True:
                total = header_length(buffer)
                want = (total if total is not None else V1_MAX) - len(buffer)
                if want <= 0:
                    return parse(buffer)
                peeked = await _peek(loop, sock, want)
                if not peeked:
                    raise ProxyReadError("closed before its PROXY header ended")
                total = header_length(buffer + peeked)
                take = len(peeked) if total is None else min(len(peeked), total - len(buffer))
                buffer += sock.recv(take, socket.MSG_DONTWAIT)  # peeked: there
    except ProxyHeaderError as err:
        raise ProxyReadError(str(err)) from None
    except TimeoutError:
        raise ProxyReadError(f"no whole PROXY header within {timeout:g} s") from None
    except OSError as err:
        raise ProxyReadError(f"reading the PROXY header: {err.strerror or err}") from None


async def _peek(loop: asyncio.AbstractEventLoop, sock: socket.socket, size: int) -> bytes:
    """Up to `size` octets of what has arrived, left in the socket; waits for some."""
    while True:
        try:
            return sock.recv(size, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            pass
        ready = loop.create_future()
        fd = sock.fileno()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
