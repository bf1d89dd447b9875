"""A blocking client of the Postfix policy protocol, speaking as Postfix's smtpd does."""

from __future__ import annotations

import socket
from typing import Any

from tests.support.waiting import DEADLINE


def request(state: str = "RCPT", **attributes: str) -> dict[str, str]:
    """A request as Postfix 3.7 sends it at `state` (attributes override the defaults)."""
    base = {
        "request": "smtpd_access_policy",
        "protocol_state": state,
        "protocol_name": "ESMTP",
        "client_address": "192.0.2.7",
        "client_name": "unknown",
        "client_port": "40000",
        "helo_name": "client.test",
        "sender": "someone@sender.test",
        "recipient": "alice@example.test",
        "instance": "1a2b.5f1e3a.0",
    }
    base.update(attributes)
    return base


class PolicyClient:
    def __init__(
        self,
        address: tuple[str, int] | str,
        timeout: float = DEADLINE,
        source: str | None = None,
    ) -> None:
        """`source`: the loopback address to connect from (TCP only)."""
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        if source is not None:
            self.sock.bind((source, 0))
        self.sock.connect(address)
        self._buffer = b""

    def __enter__(self) -> PolicyClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def ask(self, state: str = "RCPT", **attributes: str) -> str:
        """Send one request; returns the action (without `action=`)."""
        body = "".join(f"{k}={v}\n" for k, v in request(state, **attributes).items())
        self.send(body.encode() + b"\n")
        return self.answer()

    def answer(self) -> str:
        while b"\n\n" not in self._buffer:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError(f"closed by the policy service; had {self._buffer!r}")
            self._buffer += data
        answer, self._buffer = self._buffer.split(b"\n\n", 1)
        assert answer.startswith(b"action="), answer
        return answer[len(b"action=") :].decode()

    def closed(self) -> bool:
        """True once the service closed the connection (waits up to the socket's timeout)."""
        try:
            return self.sock.recv(4096) == b""
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()
