"""Two promises of a real `mailmoat serve` process that no test held it to:

* admission.max_connections is lowered at start to fit the file-descriptor limit, so accept()
  never fails with EMFILE: run under a low RLIMIT_NOFILE, the cap is what the descriptors
  allow, clients past it get a clear 421, and the server goes on serving;
* SIGTERM lets deliveries in flight finish: a message that a slow downstream is still taking
  when the signal arrives is acknowledged with 250, arrives downstream, and the process then
  exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailmoat.server.admin import fetch
from mailmoat.server.front import FD_RESERVE
from tests.support.ports import free_port
from tests.support.waiting import wait_until

POOL = 10  # relay.pool_size, kept free for the downstream connections


def _config(path: Path, port: int, **sections: dict[str, Any]) -> Path:
    body = {
        "server": {"listen": [f"127.0.0.1:{port}"], "hostname": "mx.test", "uvloop": False},
        "domains": {"local": ["example.test"]},
        "maildir": {"path": str(path.parent / "Maildir")},
        "dns": {"checks": False},
        "relay": {"pool_size": POOL},
    }
    for name, values in sections.items():
        body.setdefault(name, {}).update(values)
    lines = []
    for name, values in body.items():
        lines.append(f"[{name}]")
        for key, value in values.items():
            if isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, str):
                text = f'"{value}"'
            elif isinstance(value, list):
                text = "[" + ", ".join(f'"{v}"' for v in value) + "]"
            else:
                text = str(value)
            lines.append(f"{key} = {text}")
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.contextmanager
def serve(conf: Path, port: int, nofile: int | None = None) -> Iterator[subprocess.Popen[bytes]]:
    def limit() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = conf.with_suffix(".log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
        preexec_fn=limit,
        start_new_session=True,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # a supervisor, its workers and the clean lane's import mailmoat at once: on a busy
        # 2-core machine that alone took more than 15 s
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                    s.settimeout(5)
                    if s.recv(100).startswith(b"220"):
                        break
            except OSError:
                pass
            assert proc.poll() is None, conf.with_suffix(".log").read_text()
            assert time.monotonic() < deadline, "mailmoat serve did not start"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        log.close()


def _greeting(s: socket.socket) -> bytes:
    s.settimeout(10)
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(200)
        if not chunk:
            break
        got += chunk
    return got


# --- the connection cap fits the descriptor limit ----------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_max_connections_is_lowered_to_fit_the_descriptor_limit(
    tmp_path: Path, workers: int
) -> None:
    nofile = 128
    cap = nofile - FD_RESERVE - POOL  # what fit_connection_cap leaves: 54
    port = free_port()
    conf = _config(
        tmp_path / "mailmoat.toml",
        port,
        server={"workers": workers},
        admission={"max_connections": 10000, "max_per_ip": 1000, "max_per_network": 1000},
        stress={"start_at": 1.0, "stop_at": 1.0},
        admin={"listen": str(tmp_path / "admin.sock")},
    )
    held: list[socket.socket] = []
    with serve(conf, port, nofile=nofile) as proc:
        # the readiness probe's connection holds a place until the server has seen it close
        wait_until(
            lambda: fetch(str(tmp_path / "admin.sock"))["gauges"]["connections.active"] == 0,  # type: ignore[index]
            "the readiness probe's place given back",
        )
        try:
            # distinct addresses, so no per-address rate or limit interferes
            for i in range(cap):
                s = socket.create_connection(("127.0.0.1", port), 5, (f"127.0.60.{i + 1}", 0))
                held.append(s)
                assert _greeting(s).startswith(b"220 "), i
            with socket.create_connection(("127.0.0.1", port), 5, ("127.0.61.1", 0)) as extra:
                refused = _greeting(extra)
            assert refused.startswith(b"421 4.7.0 ") and b"too many connections" in refused
            # the server is alive and well: a freed place is taken again
            held.pop().close()
            deadline = time.monotonic() + 10
            while True:
                with socket.create_connection(("127.0.0.1", port), 5, ("127.0.61.2", 0)) as s:
                    if _greeting(s).startswith(b"220 "):
                        break
                assert time.monotonic() < deadline, "the freed place was never given again"
                time.sleep(0.1)
            assert proc.poll() is None
        finally:
            for s in held:
                s.close()
    log = conf.with_suffix(".log").read_text()
    assert "admission.max_connections lowered to fit the file-descriptor limit" in log
    assert "Too many open files" not in log and "EMFILE" not in log


# --- SIGTERM finishes deliveries in flight -----------------------------------------------------


class SlowHandler:
    """aiosmtpd handler that takes `delay` seconds to accept a message."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.in_data = threading.Event()
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.in_data.set()
        await asyncio.sleep(self.delay)
        self.messages.append(envelope.content)
        return "250 2.0.0 Ok: queued"


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_finishes_a_delivery_in_flight(tmp_path: Path, workers: int) -> None:
    handler = SlowHandler(delay=2.0)
    downstream = Controller(handler, hostname="127.0.0.1", port=free_port())
    downstream.start()
    port = free_port()
    conf = _config(
        tmp_path / "mailmoat.toml",
        port,
        server={"workers": workers},
        relay={"downstream": f"127.0.0.1:{downstream.port}"},
    )
    body = b"Subject: in flight\r\n\r\nstill being delivered when SIGTERM came\r\n"
    try:
        with serve(conf, port) as proc:
            with socket.create_connection(("127.0.0.1", port), 10) as s:
                f = s.makefile("rb")
                assert f.readline().startswith(b"220")
                s.sendall(b"EHLO client.test\r\n")
                while not f.readline().startswith(b"250 "):
                    pass
                for cmd, code in (
                    (b"MAIL FROM:<a@sender.test>", b"250"),
                    (b"RCPT TO:<alice@example.test>", b"250"),
                    (b"DATA", b"354"),
                ):
                    s.sendall(cmd + b"\r\n")
                    assert f.readline().startswith(code), cmd
                s.sendall(body + b".\r\n")
                assert handler.in_data.wait(10), "the delivery never reached the downstream"
                proc.send_signal(signal.SIGTERM)  # while the downstream is still taking it
                s.settimeout(15)
                reply = f.readline()
                assert reply.startswith(b"250 "), reply
                f.close()  # else the connection outlives `s` and the stop waits drain_time
            assert proc.wait(20) == 0
    finally:
        downstream.stop()
    assert len(handler.messages) == 1
    assert handler.messages[0].endswith(body)
