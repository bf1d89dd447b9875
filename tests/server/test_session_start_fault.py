"""A session that cannot be made (a fault of ours, not the client leaving) is said: one
error line with the client's address in the log, and 421 4.3.0 to the client, never a silent
close. Before, `Gateway._open_session` swallowed every exception without a word."""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from mailmoat import logs
from mailmoat.server import gateway as gateway_module
from mailmoat.server.session import SmtpSession
from tests.support.gateway import running_gateway
from tests.support.waiting import wait_until


class _Broken(SmtpSession):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("broken on purpose")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _until_closed(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


def test_a_session_that_cannot_start_is_logged_and_answered_421(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway_module, "SmtpSession", _Broken)
    records = _Records()
    logs.log.addHandler(records)
    try:
        with running_gateway(tmp_path / "Maildir") as gw:
            with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as sock:
                answer = _until_closed(sock)
            wait_until(
                lambda: any("cannot start a session for 127.0.0.1" in x for x in records.lines),
                timeout=20,
                what="the error line",
            )
    finally:
        logs.log.removeHandler(records)
    assert b"421 4.3.0" in answer, answer
