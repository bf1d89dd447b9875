"""SIGHUP at awkward moments, with a real `mailmoat serve` and two workers (red-team findings):
while a replacement worker is starting, during start-up, while stopping, and a reload whose
restart-only values, put back, would make the gateway deliver to itself."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from mailmoat.server.admin import fetch
from tests.server.test_reload import _edit, _hup, _reload_lines
from tests.server.test_workers import _greeted, served
from tests.support.ports import free_port
from tests.support.raw_client import read_reply
from tests.support.waiting import wait_until


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            found |= {int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split()}
    return found


def _ignores_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


def _rcpt_elsewhere(s: socket.socket) -> bytes:
    """RCPT to a domain that is not ours on the greeted session `s`; the reply."""
    for line in (b"EHLO c.test", b"MAIL FROM:<b@sender.test>", b"RCPT TO:<v@elsewhere.test>"):
        s.sendall(line + b"\r\n")
        reply = read_reply(s)
    return reply


def test_a_worker_that_starts_during_a_reload_gets_the_new_settings(tmp_path: Path) -> None:
    """The replacement of a killed worker is started with the settings of that moment; a
    reload that comes before it is ready must still reach it before it serves anyone."""
    settings = {"domains.relay_networks": ["127.0.0.0/8"], "log.level": "info"}
    with served(tmp_path, **settings, **{"tarpit.suspect_delay": 0}) as srv:
        before = _children(srv.proc.pid)
        [victim, _] = srv.worker_pids()
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: _children(srv.proc.pid) - before - {victim}, "a replacement")
        _edit(tmp_path, 'relay_networks = ["127.0.0.0/8"]', "relay_networks = []")
        _hup(srv, tmp_path, "status=ok")
        wait_until(
            lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(),
            "both workers up",
        )
        held = srv.fill_local()
        opened = [_greeted(srv.port, f"127.0.0.{60 + i}") for i in range(6)]
        wait_until(lambda: srv.sessions()[1] == [3, 3], "three sessions in each worker")
        replies = [_rcpt_elsewhere(s) for s in opened]  # half of them in the replacement
        assert all(r.startswith(b"554 5.7.1") for r in replies), replies
        for s in [*opened, *held]:
            s.close()


def test_sighup_during_start_up_never_kills_it(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "mailmoat.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "mx.test"\nworkers = 2\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{tmp_path / "Maildir"}"\n'
        f'[admin]\nlisten = "{tmp_path / "admin.sock"}"\n[dns]\nchecks = false\n'
    )
    with (tmp_path / "log").open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        # from the moment mailmoat's own code runs (it ignores SIGHUP first thing), not during
        # the interpreter's start, which no program can shield
        wait_until(lambda: proc.poll() is not None or _ignores_sighup(proc.pid), "SIGHUP ignored")
        deadline = time.monotonic() + 60
        while True:  # SIGHUP to the whole group, all through the start, until it serves
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGHUP)
            assert proc.poll() is None, (tmp_path / "log").read_text()
            with contextlib.suppress(OSError, ValueError):
                if len(fetch(str(tmp_path / "admin.sock"))["workers"]) == 2:
                    break
            assert time.monotonic() < deadline, "did not start"
            time.sleep(0.01)
        _greeted(port).close()
        assert proc.poll() is None
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_sighup_while_stopping_reloads_nothing(tmp_path: Path) -> None:
    with served(tmp_path, **{"log.level": "info"}) as srv:
        srv.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: " stopping " in (tmp_path / "mailmoat.log").read_text(), "stopping")
        for _ in range(3):
            with contextlib.suppress(ProcessLookupError):
                srv.proc.send_signal(signal.SIGHUP)
        assert srv.proc.wait(30) == 0
        assert _reload_lines(tmp_path) == []


def test_a_reload_that_would_deliver_to_itself_is_refused(tmp_path: Path) -> None:
    """The new file listens on Q and relays to P, the old listener: valid as a file, but
    listeners need a restart, so the gateway would keep P and deliver to itself."""
    sink = free_port()
    with served(tmp_path, **{"relay.downstream": f"127.0.0.1:{sink}"}) as srv:
        other = free_port()
        _edit(tmp_path, f'"127.0.0.1:{srv.port}"', f'"127.0.0.1:{other}"')
        _edit(tmp_path, f'"127.0.0.1:{sink}"', f'"127.0.0.1:{srv.port}"')
        line = _hup(srv, tmp_path, "status=refused")
        assert "relay.downstream" in line, line
        assert srv.proc.poll() is None
