"""A real `mailmoat serve` under systemd's notify protocol: READY=1 once it listens,
STOPPING=1 on SIGTERM, WATCHDOG=1 pings when a watchdog is set, and SIGHUP (what
`systemctl reload` and logrotate send) never kills it or its workers."""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.ports import free_port


def _datagrams(sock: socket.socket, want: str, deadline: float) -> list[str]:
    """Every datagram read until one holds `want` (or the deadline passes)."""
    got: list[str] = []
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if any(want in line.split("\n") for line in got):
            break
    return got


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, Path]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, path
    sock.close()


def _serve(tmp_path: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "--listen", f"127.0.0.1:{port}",
         "--domain", "example.test", "--maildir", str(tmp_path / "Maildir"),
         "--hostname", "mx.example.test"],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,  # its own process group, as under systemd
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> bytes:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return err


def test_ready_then_stopping(tmp_path: Path, notify_socket: tuple[socket.socket, Path]) -> None:
    sock, path = notify_socket
    port = free_port()
    proc = _serve(tmp_path, port, {"NOTIFY_SOCKET": str(path)})
    try:
        got = _datagrams(sock, "READY=1", time.monotonic() + 60)
        assert any("READY=1" in g.split("\n") for g in got), got
        # Ready means listening: a client is served at once.
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.noop()[0] == 250
        proc.send_signal(signal.SIGTERM)
        got = _datagrams(sock, "STOPPING=1", time.monotonic() + 30)
        assert any("STOPPING=1" in g.split("\n") for g in got), got
        assert proc.wait(timeout=30) == 0
    finally:
        _stop(proc)


def test_watchdog_pings(tmp_path: Path, notify_socket: tuple[socket.socket, Path]) -> None:
    sock, path = notify_socket
    proc = _serve(tmp_path, free_port(), {"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
    try:
        pings = 0
        deadline = time.monotonic() + 60
        while pings < 3 and time.monotonic() < deadline:
            got = _datagrams(sock, "WATCHDOG=1", deadline)
            pings += sum(g.split("\n").count("WATCHDOG=1") for g in got)
        assert pings >= 3
    finally:
        _stop(proc)


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(p) for p in text.split()}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_sighup_keeps_the_gateway_and_its_workers(
    tmp_path: Path, notify_socket: tuple[socket.socket, Path]
) -> None:
    sock, path = notify_socket
    port = free_port()
    proc = _serve(tmp_path, port, {"NOTIFY_SOCKET": str(path)})
    try:
        assert any("READY=1" in g for g in _datagrams(sock, "READY=1", time.monotonic() + 60))
        workers = _children(proc.pid)
        assert workers, "expected worker processes (one per core)"
        # The main process alone, as `systemctl reload` sends it, then the whole process
        # group, as a terminal hang-up does.
        proc.send_signal(signal.SIGHUP)
        os.killpg(proc.pid, signal.SIGHUP)
        # each reload says so to systemd, and says when it is done
        got = _datagrams(sock, "READY=1", time.monotonic() + 30)
        assert any("RELOADING=1" in g.split("\n") for g in got), got
        watch_until = time.monotonic() + 1.0
        while time.monotonic() < watch_until:
            assert _alive(proc.pid) and all(_alive(w) for w in workers)
            time.sleep(0.05)
        for _ in range(3):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                refused = client.sendmail(
                    "bob@sender.test",
                    ["alice@example.test"],
                    b"From: <bob@sender.test>\r\nSubject: x\r\n\r\nhi\r\n",
                )
            assert refused == {}
        assert _children(proc.pid) == workers
    finally:
        err = _stop(proc)
    assert proc.returncode == 0
    assert b"reload status=ok" in err  # SIGHUP reloads the configuration (issue 13 item 2)
