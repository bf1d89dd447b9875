"""Worker processes (`server.workers`): a real `mailmoat serve` with a supervisor and two
workers on loopback. The supervisor runs up to two sessions itself (LOCAL_SESSIONS) and hands
the others over, so the tests that are about the workers first fill those two places with idle
sessions, one at a time (it counts a session once it has started: a burst may leave it more).
Mail flows through every process; the per-address cap, bans, pregreet verdicts and counters
hold across them, because admission and the store live with the supervisor; a killed worker
gives its slots back and is replaced; SIGTERM stops them all. Every count is awaited
(tests/support/waiting.py): the processes get there when the busy machine lets them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.server.admin import fetch
from mailmoat.server.supervisor import LOCAL_SESSIONS, SPREAD
from tests.support.ports import free_port
from tests.support.raw_client import closed, connect, read_all, read_reply, refused_at_connect
from tests.support.waiting import wait_until

BODY = b"Subject: workers\r\n\r\nhello\r\n"


class Served:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, admin: Path, maildir: Path):
        self.proc = proc
        self.port = port
        self.admin = admin
        self.maildir = maildir

    def stats(self) -> dict[str, Any]:
        return fetch(str(self.admin))

    def worker_pids(self) -> list[int]:
        return [int(w["pid"]) for w in self.stats()["workers"]]

    def sessions(self) -> tuple[int, list[int]]:
        """Sessions open in the supervisor itself, and in each worker (one snapshot; the clean
        lane's worker is in neither)."""
        doc = self.stats()
        workers = [int(w["sessions"]) for w in doc["workers"]]
        lane = int(doc.get("lane", {}).get("sessions", 0))
        return int(doc["gauges"]["sessions"]) - sum(workers) - lane, workers

    def fill_local(self, src: str = "127.0.0.20") -> list[Any]:
        """Idle sessions in the supervisor's own places, each awaited before the next
        connects: from then on every new connection goes to a worker. Call it with no
        session open (a closed one may still be counted for a moment: that is awaited)."""
        _wait(lambda: self.sessions() == (0, [0, 0]), "no session open")
        held = []
        for n in range(1, LOCAL_SESSIONS + 1):
            held.append(_greeted(self.port, src))
            _wait(lambda n=n: self.sessions() == (n, [0, 0]), f"{n} sessions in the supervisor")
        return held

    def counter(self, name: str) -> int:
        return int(self.stats()["counters"].get(name, 0))

    def wait_counter(self, name: str, value: int) -> None:
        _wait(lambda: self.counter(name) == value, f"counter {name} == {value}")

    def send(self, rcpt: str = "alice@example.test", src: str = "127.0.0.1") -> None:
        with smtplib.SMTP("127.0.0.1", self.port, timeout=10, source_address=(src, 0)) as s:
            s.sendmail("bob@sender.test", [rcpt], BODY)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


@contextlib.contextmanager
def served(tmp_path: Path, workers: int = 2, **settings: object) -> Iterator[Served]:
    """`mailmoat serve` with `workers` worker processes (they are all up when it yields;
    `workers=1`: one process, no supervisor)."""
    port = free_port()
    admin = tmp_path / "admin.sock"
    maildir = tmp_path / "Maildir"
    values: dict[str, object] = {
        "server.listen": [f"127.0.0.1:{port}"],
        "server.hostname": "mx.test",
        "server.workers": workers,
        "domains.local": ["example.test"],
        "maildir.path": str(maildir),
        "admin.listen": str(admin),
        "dns.checks": False,
        "log.level": "warning",
    } | settings
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        head, name = key.split(".", 1)
        sections.setdefault(head, []).append(f"{name} = {_toml(value)}")
    conf = tmp_path / "mailmoat.toml"
    conf.write_text("".join(f"[{h}]\n" + "\n".join(v) + "\n\n" for h, v in sections.items()))
    log = open(tmp_path / "mailmoat.log", "wb")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "mailmoat.log").read_text()
            with contextlib.suppress(OSError, ValueError):
                want = workers or len(os.sched_getaffinity(0))
                doc = fetch(str(admin))
                if len(doc.get("workers", [None])) == want:  # one process: no "workers"
                    break
            assert time.monotonic() < deadline, "mailmoat with workers did not start"
            time.sleep(0.05)
        yield Served(proc, port, admin, maildir)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()


def _wait(predicate: Any, what: str = "condition") -> None:
    wait_until(predicate, what, interval=0.05)


def _greeted(port: int, src: str = "127.0.0.1") -> Any:
    s = connect(port, src)
    assert read_reply(s).startswith(b"220 "), "no greeting"
    return s


def _deliver(s: Any) -> None:
    """One message over a greeted connection, then QUIT."""
    for line in (
        b"EHLO client.test",
        b"MAIL FROM:<bob@sender.test>",
        b"RCPT TO:<alice@example.test>",
        b"DATA",
    ):
        s.sendall(line + b"\r\n")
        assert read_reply(s)[:1] in (b"2", b"3")
    s.sendall(BODY + b".\r\n")
    assert read_reply(s).startswith(b"250 ")
    s.sendall(b"QUIT\r\n")
    read_reply(s)
    s.close()


def test_mail_flows_through_both_workers_and_counters_add_up(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        # eight sessions open at once: two in the supervisor, the six others spread over both
        # workers, neither more than SPREAD + 1 above the other (the worker that had the last
        # connection keeps getting them up to SPREAD above the least busy)
        held = srv.fill_local("127.0.0.1") + [_greeted(srv.port) for _ in range(6)]
        # the supervisor greets at admission: the sessions may start a moment later
        _wait(lambda: srv.stats()["gauges"]["sessions"] == 8, "8 sessions")
        assert srv.stats()["gauges"]["connections.active"] == 8
        local, (a, b) = srv.sessions()
        assert local == LOCAL_SESSIONS and a + b == 6, (local, a, b)
        assert a >= 1 and b >= 1 and abs(a - b) <= SPREAD + 1, (a, b)
        for s in held:
            _deliver(s)
        _wait(lambda: srv.stats()["gauges"]["connections.active"] == 0, "all connections closed")
        names = os.listdir(srv.maildir / "new")  # each one written before its 250
        assert len(names) == 8
        pids = {n.split("P", 1)[1].split("R", 1)[0] for n in names}
        every = {str(p) for p in [srv.stats()["pid"], *srv.worker_pids()]}
        assert pids == every, "the supervisor and both workers delivered"
        for _ in range(2):
            srv.send()
        srv.wait_counter("closed.quit", 10)  # counted by the sessions, wherever, once closed
        doc = srv.stats()
        assert doc["counters"]["connections.accepted"] == 10  # counted by the supervisor
        assert len(doc["workers"]) == 2 and doc["gauges"]["workers.ready"] == 2


def test_per_address_cap_holds_across_workers(tmp_path: Path) -> None:
    with served(tmp_path, **{"admission.max_per_ip": 3, "tarpit.suspect_delay": 0}) as srv:
        # the supervisor and the workers: the cap is counted at admission all the same
        held = [_greeted(srv.port, "127.0.0.7") for _ in range(3)]
        refusal = refused_at_connect(srv.port, "127.0.0.7")
        assert refusal.startswith(b"421 4.7.0") and b"too many connections from your address" in (
            refusal
        )
        other = _greeted(srv.port, "127.0.0.8")  # another address is not affected
        other.close()
        held.pop().close()  # a slot given back by a worker is free again at the supervisor
        _wait(lambda: srv.stats()["gauges"]["connections.active"] == 2, "2 connections left")
        again = _greeted(srv.port, "127.0.0.7")
        for s in [*held, again]:
            s.close()
        assert srv.counter("refused.max_per_ip") == 1


def test_strikes_in_the_workers_ban_at_the_supervisor(tmp_path: Path) -> None:
    settings = {"bans.strikes": 2, "bans.duration": 60, "tarpit.suspect_delay": 0}
    with served(tmp_path, **settings) as srv:
        idle = srv.fill_local()
        for _ in range(2):
            s = _greeted(srv.port, "127.0.0.9")
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")  # non-SMTP input: closed, one strike
            assert read_all(s).startswith(b"554 5.7.0")
            s.close()
            time.sleep(1.1)  # strikes closer together than a second count once
        srv.wait_counter("bans", 1)  # the strikes travel from the worker to the supervisor
        refusal = refused_at_connect(srv.port, "127.0.0.9")
        assert refusal.startswith(b"421 4.7.0") and b"temporarily blocked" in refusal
        assert srv.counter("strikes") == 2 and srv.counter("refused.banned") == 1
        for s in idle:
            s.close()
        srv.send()  # everyone else still gets through


def test_pregreet_verdicts_are_shared_through_the_supervisors_store(tmp_path: Path) -> None:
    with served(tmp_path, **{"pregreet.wait": 0.4}) as srv:
        idle = srv.fill_local()  # (held greetings: they are sessions of the supervisor's)
        t0 = time.monotonic()
        srv.send()  # an address not seen before waits for its greeting (in a worker)
        assert time.monotonic() - t0 >= 0.4
        srv.wait_counter("pregreet.passed", 1)
        # the worker stored "pass" through the supervisor: the address is greeted at once from
        # now on, so a client that talks without waiting for the greeting is no early talker
        for _ in range(2):
            s = connect(srv.port)
            s.sendall(b"EHLO client.test\r\n")
            assert read_reply(s).startswith(b"220 ")
            assert read_reply(s).startswith(b"250"), "not held, not refused"
            s.close()
        # one that talks first is refused at connect from then on, whichever worker saw it
        s = connect(srv.port, "127.0.0.11")
        s.sendall(b"EHLO early.test\r\n")
        assert read_all(s).startswith(b"554 5.5.0")
        s.close()
        srv.wait_counter("pregreet.failed", 1)
        assert refused_at_connect(srv.port, "127.0.0.11").startswith(b"421 4.7.0")
        for s in idle:
            s.close()


def test_a_killed_worker_gives_its_slots_back_and_is_replaced(tmp_path: Path) -> None:
    with served(tmp_path, **{"admission.max_per_ip": 2, "tarpit.suspect_delay": 0}) as srv:
        idle = srv.fill_local()
        held = [_greeted(srv.port, "127.0.0.12") for _ in range(2)]  # both to one worker
        assert refused_at_connect(srv.port, "127.0.0.12").startswith(b"421 4.7.0")
        # the worker counts them once their sessions have started there
        _wait(lambda: sorted(srv.sessions()[1]) == [0, 2], "both sessions in one worker")
        victim = next(int(w["pid"]) for w in srv.stats()["workers"] if w["sessions"])
        os.kill(victim, signal.SIGKILL)
        assert all(closed(s, 20.0) for s in held), "the killed worker's sessions are gone"
        _wait(lambda: srv.stats()["gauges"]["connections.active"] == 2, "the idle two left")
        again = _greeted(srv.port, "127.0.0.12")  # its slot is free again
        again.close()
        for s in [*held, *idle]:
            s.close()
        _wait(
            lambda: len(srv.worker_pids()) == 2 and victim not in srv.worker_pids(),
            "a new worker in the killed one's place",
        )
        assert srv.counter("workers.restarted") == 1
        for _ in range(4):
            srv.send()
        assert len(os.listdir(srv.maildir / "new")) == 4


def test_sigterm_stops_the_supervisor_and_every_worker(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        pids = srv.worker_pids()
        srv.send()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(20) == 0
        for pid in pids:
            _wait(lambda pid=pid: not _alive(pid), f"worker {pid} gone")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_workers_zero_means_one_per_core(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: workers = 0 runs one process")
    with served(tmp_path, workers=0) as srv:
        assert len(srv.worker_pids()) == len(os.sched_getaffinity(0))
        srv.send()


def test_stress_mode_decided_by_the_supervisor_tightens_the_workers_deadlines(
    tmp_path: Path,
) -> None:
    settings = {
        "admission.max_connections": 8,
        "admission.max_per_ip": 8,
        "stress.start_at": 0.5,
        "stress.stop_at": 0.125,  # off once every idle session is closed
        "stress.greeting": 1.0,
        "stress.hold": 0,
        "bans.strikes": 0,
        "timeouts.greeting": 300.0,  # far beyond any wait below: only stress mode closes
    }
    with served(tmp_path, **settings) as srv:
        connected = time.monotonic()
        idle = srv.fill_local("127.0.0.13")
        idle += [_greeted(srv.port, "127.0.0.13") for _ in range(3)]  # 5 > 8 * 0.5: stress on
        # idle sessions, in the supervisor and a worker, are closed for stress.greeting, not
        # before it has passed (the greeting came after `connected`)
        for s in idle:
            assert read_all(s, 30.0).startswith(b"421 4.4.2"), "closed for its deadline"
            assert time.monotonic() - connected >= 1.0
            s.close()
        srv.wait_counter("closed.timeout", 5)
        assert srv.counter("stress.started") == 1  # (on for a moment only: not polled for)
        _wait(lambda: srv.stats()["gauges"]["stress.active"] == 0, "stress mode off")


def test_a_port_in_use_stops_the_workers_too(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        pids = srv.worker_pids()
        conf = tmp_path / "second.toml"
        conf.write_text(
            (tmp_path / "mailmoat.toml")
            .read_text()
            .replace(str(srv.admin), str(tmp_path / "admin2.sock"))
        )
        second = subprocess.run(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
            capture_output=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert b"cannot start" in second.stderr and b"in use" in second.stderr
        assert srv.worker_pids() == pids  # the first one is unharmed
        srv.send()
    # nothing of the second instance is left running
    leftover = subprocess.run(["pgrep", "-f", f"mailmoat serve -c {conf}"], capture_output=True)
    assert leftover.stdout == b""


def test_a_light_load_is_served_by_the_supervisor_without_a_hand_over(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        for i in range(5):  # one sender at a time (each new: one that delivered is known, and a
            srv.send(src=f"127.0.0.{40 + i}")  # known client goes to the clean lane)
        names = os.listdir(srv.maildir / "new")
        supervisor = str(srv.stats()["pid"])
        assert len(names) == 5
        assert {n.split("P", 1)[1].split("R", 1)[0] for n in names} == {supervisor}
        # two sessions in the supervisor's own places; the third is handed over (from an
        # address that has not delivered yet: 127.0.0.1's would go to the clean lane)
        held = [*srv.fill_local("127.0.0.1"), _greeted(srv.port, "127.0.0.30")]
        _wait(lambda: sorted(srv.sessions()[1]) == [0, 1], "the third session in a worker")
        assert srv.sessions()[0] == LOCAL_SESSIONS
        for s in held:
            s.close()


def test_a_burst_that_arrives_at_once_is_spread_over_the_workers(tmp_path: Path) -> None:
    """100 connections at once: the supervisor keeps LOCAL_SESSIONS (2) and hands the rest
    over (it counts a session of its own when it decides, not when the session starts)."""
    with served(tmp_path) as srv:
        # from 100 addresses (one address may open only admission.max_rate a minute)
        socks = [connect(srv.port, f"127.0.{3 + i // 50}.{i % 50 + 1}") for i in range(100)]
        try:
            _wait(lambda: srv.stats()["gauges"]["sessions"] == 100, "100 sessions")
            doc = srv.stats()
            workers = [w["sessions"] for w in doc["workers"]]
            local = doc["gauges"]["sessions"] - sum(workers)
            assert local <= 2, (local, workers)
            assert doc["gauges"]["sessions.local"] == local
            assert min(workers) >= 40, workers  # both workers took their share
            for s in socks:
                assert read_reply(s).startswith(b"220 ")
        finally:
            for s in socks:
                s.close()
        _wait(lambda: srv.stats()["gauges"]["sessions.local"] == 0)


def test_a_flood_of_short_connections_goes_to_the_workers(tmp_path: Path) -> None:
    """Connections that each close at once free the supervisor's places as fast as they fill:
    past LOCAL_RATE (10) new connections a second they are handed over all the same."""
    with served(tmp_path) as srv:
        started = time.monotonic()
        for i in range(100):
            s = _greeted(srv.port, f"127.0.{3 + i // 50}.{i % 50 + 1}")
            s.sendall(b"QUIT\r\n")
            read_reply(s)
            s.close()
        elapsed = time.monotonic() - started
        _wait(lambda: srv.stats()["counters"].get("closed.quit", 0) == 100)
        counters = srv.stats()["counters"]
        here = counters.get("sessions.run_here", 0)
        handed = counters.get("sessions.handed_over", 0)
        assert here + handed == 100
        assert here <= 10 * (elapsed + 1), (here, handed, elapsed)
