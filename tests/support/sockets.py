"""Blocking client helpers for the denial-of-service tests: connect from a chosen 127.0.0.x
address, read the greeting, read until the server closes, a settable clock."""

from __future__ import annotations

import socket
import time

from tests.support.waiting import DEADLINE


class Clock:
    """A clock the test moves by hand (for the store, bans and rate windows)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def connect(port: int, src: str = "127.0.0.1", timeout: float = DEADLINE) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(src, 0))


def read_line(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """One reply line (CRLF included), or what came before the server closed."""
    sock.settimeout(timeout)
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        got += chunk
    return got


def read_reply(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """A whole (possibly multi-line) reply."""
    lines = b""
    while True:
        line = read_line(sock, timeout)
        lines += line
        if len(line) < 4 or line[3:4] != b"-":
            return lines


def read_all(sock: socket.socket, timeout: float = DEADLINE) -> bytes:
    """Everything until the server closes (or `timeout` passes)."""
    sock.settimeout(timeout)
    got = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


def refused_at_connect(port: int, src: str = "127.0.0.1") -> bytes:
    """Connect and return all the server said before it closed (one 421 line when refused)."""
    with connect(port, src) as s:
        return read_all(s)


def closed(sock: socket.socket, timeout: float = DEADLINE) -> bool:
    """True when the server has closed the connection (EOF or reset) within `timeout`."""
    sock.settimeout(timeout)
    try:
        while chunk := sock.recv(4096):
            del chunk
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
