"""The blocking SMTP test client: a plain socket that sends exactly the bytes it is given.

The functions work on a socket the test holds itself (connect from any 127.0.0.0/8 address,
read one line or one reply, read until the server closes); `RawClient` wraps one connection and
parses each reply into a `Reply`, failing the test on anything that is not one. Replies are
read a byte at a time, so nothing after a reply is ever consumed by the reader. Every wait is
bounded.
"""

from __future__ import annotations

import re
import socket
import time
from dataclasses import dataclass

from tests.support.ports import LOOPBACK
from tests.support.waiting import DEADLINE


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


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class RawClient:
    """One connection to host:port; every wait for a reply is bounded by ``timeout``, and a
    missing reply fails the test with what was read."""

    def __init__(
        self, port: int, timeout: float = 10.0, host: str = LOOPBACK, source: str | None = None
    ) -> None:
        src = None if source is None else (source, 0)
        self.sock = socket.create_connection((host, port), timeout=timeout, source_address=src)
        self.timeout = timeout
        self.closed = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> Reply | None:
        """The next complete (possibly multi-line) reply, or None if the server closed first."""
        if self.closed:
            return None
        deadline = time.monotonic() + self.timeout
        lines: list[str] = []
        while True:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                raw = read_line(self.sock, remaining)
            except TimeoutError:
                raise AssertionError(
                    f"no complete reply within {self.timeout}s; got {lines!r}"
                ) from None
            except ConnectionResetError:
                raw = b""
            if not raw.endswith(b"\r\n"):
                self.closed = True
                assert not raw, f"connection closed inside a reply: {raw!r}"
                return None
            line = raw[:-2].decode("utf-8", "replace")
            assert re.match(r"^[2-5]\d\d[ -]", line + " "), f"not an SMTP reply line: {line!r}"
            lines.append(line[4:])
            if line[3:4] != "-":
                return Reply(int(line[:3]), tuple(lines))

    def expect(self, code: int) -> Reply:
        r = self.reply()
        assert r is not None and r.code == code, f"expected {code}, got {r}"
        return r

    def command(self, line: bytes) -> Reply:
        self.send(line)
        r = self.reply()
        assert r is not None, f"connection closed after {line!r}"
        return r

    def replies_until_closed(self) -> list[Reply]:
        """Every reply until the server closes the connection (each bounded by ``timeout``)."""
        got: list[Reply] = []
        while (r := self.reply()) is not None:
            got.append(r)
        return got


def greeting(port: int, src: str = "127.0.0.1") -> bytes:
    """Connect and return the first reply (220 when admitted, 421 when refused at connect)."""
    with connect(port, src) as s:
        return read_reply(s)
