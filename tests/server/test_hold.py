"""The supervisor holds a greeted connection it would hand over until its client talks
(server/hold.py), while a greet-and-leave flood is seen: a real `mailmoat serve` with two
workers. With no flood seen, a connection is handed over at once, before its first byte (an
ordinary sender pays nothing); `HOLD_TRIGGER` clients that leave after the 220 engage the
hold. Then a client that reads the 220 and leaves is closed in the supervisor and never
reaches a worker; one that talks, at once or after a moment, is handed over with its bytes
and served as before; a silent one is handed over at the end of its hold and times out as
`timeouts.greeting` says, the time held counted. The in-process tests run a real supervisor
and its two worker processes in this process, with the hold's time or bound changed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.limits import HOLD_TIME, HOLD_TRIGGER
from mailmoat.server import supervisor as supervisor_module
from mailmoat.server.supervisor import LOCAL_SESSIONS, Supervisor
from tests.server.test_workers import Served, _deliver, _greeted, _wait, served
from tests.support.raw_client import connect, read_all, read_reply
from tests.support.waiting import DEADLINE

LOGGED = {"log.level": "debug", "log.format": "json"}


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    docs = []
    for line in (tmp_path / "mailmoat.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if isinstance(doc, dict):
                docs.append(doc)
    return docs


def _held(srv: Served) -> int:
    return int(srv.stats()["gauges"].get("connections.held", -1))


def _engage(srv: Served) -> None:
    """A greet-and-leave flood (the supervisor's places filled: they go to the workers,
    whose sessions report them), then wait for the hold to engage."""
    for i in range(1, HOLD_TRIGGER + 1):
        _greeted(srv.port, f"127.0.6.{i}").close()
    srv.wait_counter("closed.eof", HOLD_TRIGGER)
    _wait(lambda: srv.stats()["gauges"]["connections.hold_engaged"] == 1, "hold engaged")
    _wait(lambda: sum(w["sessions"] for w in srv.stats()["workers"]) == 0, "flood gone")


def test_a_client_that_leaves_after_the_greeting_never_reaches_a_worker(
    tmp_path: Path,
) -> None:
    with served(tmp_path, **LOGGED) as srv:
        idle = srv.fill_local()  # from here every connection would go to a worker
        _engage(srv)
        handed = srv.counter("sessions.handed_over")
        addresses = [f"127.0.4.{i}" for i in range(1, 6)]
        for src in addresses:
            _greeted(srv.port, src).close()  # reads the 220 and leaves
        srv.wait_counter("connections.left_after_greeting", 5)
        _wait(lambda: srv.stats()["gauges"]["connections.active"] == LOCAL_SESSIONS)
        doc = srv.stats()
        assert doc["counters"]["sessions.handed_over"] == handed, "none went to a worker"
        assert [w["sessions"] for w in doc["workers"]] == [0, 0]
        assert doc["counters"]["closed.eof"] == HOLD_TRIGGER, "no session saw its end of file"
        assert doc["gauges"]["connections.held"] == 0
        metrics = doc  # the same counter is what /metrics renders
        assert metrics["counters"]["connections.left_after_greeting"] == 5
        for s in idle:
            s.close()
    docs = _log(tmp_path)
    assert not [d for d in docs if d.get("event") == "disconnect" and d["client"] in addresses]
    left = [d for d in docs if d.get("event") == "left_after_greeting"]
    assert sorted(d["client"] for d in left) == addresses
    assert {d.get("level", "debug").lower() for d in left} == {"debug"}
    assert not [d for d in docs if d.get("event") == "refused"], "leaving is no refusal"


def test_a_client_that_talks_is_held_then_served_by_a_worker(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        idle = srv.fill_local()
        _engage(srv)
        handed = srv.counter("sessions.handed_over")
        s = _greeted(srv.port, "127.0.4.10")
        _wait(lambda: _held(srv) == 1, "the greeted, silent client held")
        assert [w["sessions"] for w in srv.stats()["workers"]] == [0, 0]
        _deliver(s)  # its EHLO goes with the connection to a worker, which delivers
        # a client that sends EHLO right after connecting, before it read the 220
        early = connect(srv.port, "127.0.4.11")
        early.sendall(b"EHLO early.test\r\n")
        assert read_reply(early).startswith(b"220 ")
        assert read_reply(early).startswith(b"250")
        early.sendall(b"MAIL FROM:<bob@sender.test>\r\n")
        assert read_reply(early).startswith(b"250")
        early.sendall(b"QUIT\r\n")
        assert read_reply(early).startswith(b"221")
        early.close()
        srv.wait_counter("closed.quit", 2)
        assert srv.counter("sessions.handed_over") == handed + 2
        names = os.listdir(srv.maildir / "new")
        assert len(names) == 1
        assert names[0].split("P", 1)[1].split("R", 1)[0] in map(str, srv.worker_pids())
        assert srv.counter("connections.left_after_greeting") == 0
        for c in idle:
            c.close()


def test_a_silent_client_is_handed_over_and_times_out_as_the_settings_say(
    tmp_path: Path,
) -> None:
    greeting = 4.0  # the idle sessions that fill the supervisor's places time out too
    with served(tmp_path, **LOGGED, **{"timeouts.greeting": greeting}) as srv:
        idle = srv.fill_local()
        _engage(srv)
        handed = srv.counter("sessions.handed_over")
        # the server starts its greeting timer between these two instants: counted from the
        # first, the client waited at least `greeting` (from the second it may be a bit less)
        connecting_at = time.monotonic()
        s = _greeted(srv.port, "127.0.4.20")
        greeted_at = time.monotonic()
        _wait(lambda: _held(srv) == 1, "held")
        # at the end of its hold it goes to a worker, whose session times it out
        _wait(lambda: sum(w["sessions"] for w in srv.stats()["workers"]) == 1, "handed over")
        assert srv.counter("sessions.handed_over") == handed + 1
        assert read_all(s, 30.0).startswith(b"421 4.4.2")
        closed_at = time.monotonic()
        assert closed_at - connecting_at >= greeting
        silence = closed_at - greeted_at
        s.close()
        for c in idle:
            c.close()
    (line,) = [
        d for d in _log(tmp_path) if d.get("event") == "disconnect" and d["client"] == "127.0.4.20"
    ]
    assert line["reason"] == "timeout"
    # the session counts the time held: the silence it measured is the one the client saw
    # (not the setting plus the hold), give or take how late this test read the close
    assert line["duration"] >= greeting
    assert line["duration"] >= silence - HOLD_TIME / 2


def test_held_clients_survive_a_reload_and_are_closed_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    with served(tmp_path, **LOGGED) as srv:
        idle = srv.fill_local()
        _engage(srv)
        s = _greeted(srv.port, "127.0.4.30")
        _wait(lambda: _held(srv) == 1, "held")
        srv.proc.send_signal(signal.SIGHUP)
        _wait(lambda: [d for d in _log(tmp_path) if d.get("event") == "reload"], "reloaded")
        _deliver(s)  # held across the reload or handed over meanwhile: served all the same
        late = _greeted(srv.port, "127.0.4.31")
        _wait(lambda: _held(srv) == 1, "held")
        srv.proc.send_signal(signal.SIGTERM)
        # it said nothing yet: a polite 421 and a close, here or from the worker
        assert read_all(late).startswith(b"421 4.3.2")
        assert srv.proc.wait(DEADLINE) == 0
        for c in [late, *idle]:
            c.close()
    assert len(os.listdir(srv.maildir / "new")) == 1


# ------------------------------------------------------------ in this process
class InProcess:
    """A real supervisor with two worker processes, on an event loop in a thread."""

    def __init__(self, settings: config.Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.sup = Supervisor(settings, 2)
        self.port = 0
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE * 3)

    async def _value(self, fn: Any) -> Any:
        return fn()

    def call(self, fn: Any) -> Any:
        return self.run(self._value(fn))

    def stats(self) -> dict[str, Any]:
        return self.run(self.sup.snapshot())  # type: ignore[no-any-return]


@contextlib.contextmanager
def in_process(tmp_path: Path, **overrides: object) -> Iterator[InProcess]:
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.test",
            "server.uvloop": False,
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "Maildir"),
            "dns.checks": False,
            "log.level": "warning",
            **overrides,
        },
    )
    node = InProcess(settings)
    node._thread.start()
    try:
        node.port = node.run(node.sup.start())[0][1]
        yield node
    finally:
        node.run(node.sup.stop(2))
        node.loop.call_soon_threadsafe(node.loop.stop)
        node._thread.join(DEADLINE)


def test_a_burst_above_the_hold_bound_is_handed_over_at_once_and_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)  # held till they talk
    with in_process(tmp_path) as node:
        node.call(lambda: setattr(node.sup.hold, "limit", 5))
        node.call(lambda: node.sup.hold.saw_leaving(HOLD_TRIGGER))  # as under a flood
        node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))  # all go out
        socks: list[socket.socket] = []
        try:
            socks = [connect(node.port, f"127.0.5.{i}") for i in range(1, 21)]
            for s in socks:
                assert read_reply(s).startswith(b"220 ")
            # five held, the fifteen others handed over at once, all of them silent
            _wait(lambda: node.stats()["gauges"]["connections.held"] == 5, "five held")
            _wait(
                lambda: sum(w["sessions"] for w in node.stats()["workers"]) == 15,
                "fifteen in the workers",
            )
            for s in socks:
                s.sendall(b"EHLO burst.test\r\n")
            for s in socks:
                assert read_reply(s).startswith(b"250")
                s.sendall(b"QUIT\r\n")
                assert read_reply(s).startswith(b"221")
            _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 20, "all served")
            doc = node.stats()
            assert doc["counters"]["sessions.handed_over"] == 20
            assert doc["gauges"]["connections.held"] == 0
        finally:
            for s in socks:
                s.close()


PATIENT = {"timeouts.greeting": 120.0, "stress.greeting": 120.0}  # no hold ends before HOLD_TIME


def _in_workers(node: InProcess) -> int:
    """Sessions in the worker processes, the clean lane's included."""
    doc = node.stats()
    return sum(w["sessions"] for w in doc["workers"]) + doc.get("lane", {}).get("sessions", 0)


def test_with_no_flood_seen_a_connection_is_handed_over_before_its_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)  # a hold would last till it talks
    with in_process(tmp_path, **PATIENT) as node:
        node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))  # all go out
        s = connect(node.port, "127.0.5.1")
        try:
            assert read_reply(s).startswith(b"220 ")
            _wait(lambda: _in_workers(node) == 1, "in a worker, though it said nothing")
            doc = node.stats()
            assert doc["gauges"]["connections.held"] == 0
            assert doc["gauges"]["connections.hold_engaged"] == 0
            s.sendall(b"EHLO plain.test\r\n")
            assert read_reply(s).startswith(b"250")
            s.sendall(b"QUIT\r\n")
            assert read_reply(s).startswith(b"221")
        finally:
            s.close()


def test_a_greet_and_leave_flood_engages_the_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)  # held till they talk
    with in_process(tmp_path, **PATIENT) as node:
        node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))
        flood = [connect(node.port, f"127.0.7.{i}") for i in range(1, HOLD_TRIGGER)]
        for c in flood:  # one short of the trigger: handed over at once, left in the workers
            assert read_reply(c).startswith(b"220 ")
            c.close()
        _wait(lambda: node.stats()["counters"].get("closed.eof", 0) == HOLD_TRIGGER - 1)
        assert node.stats()["gauges"]["connections.hold_engaged"] == 0, "below the trigger"
        last = connect(node.port, "127.0.7.250")
        assert read_reply(last).startswith(b"220 ")
        last.close()
        _wait(lambda: node.stats()["gauges"]["connections.hold_engaged"] == 1, "engaged")
        _wait(lambda: _in_workers(node) == 0, "the flood's sessions over")
        handed = node.stats()["counters"]["sessions.handed_over"]
        s = connect(node.port, "127.0.7.251")
        try:
            assert read_reply(s).startswith(b"220 ")
            _wait(lambda: node.stats()["gauges"]["connections.held"] == 1, "held")
            leaver = connect(node.port, "127.0.7.252")
            assert read_reply(leaver).startswith(b"220 ")
            leaver.close()  # closed in the supervisor: no session
            _wait(lambda: node.stats()["counters"].get("connections.left_after_greeting") == 1)
            assert _in_workers(node) == 0 and node.stats()["gauges"]["connections.held"] == 1
            s.sendall(b"EHLO talker.test\r\n")  # it talks: handed over, served
            assert read_reply(s).startswith(b"250")
            s.sendall(b"QUIT\r\n")
            assert read_reply(s).startswith(b"221")
            assert node.stats()["counters"]["sessions.handed_over"] == handed + 1
        finally:
            s.close()


def test_stress_mode_engages_the_hold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)
    with in_process(tmp_path, **PATIENT, **{"stress.hold": 600.0}) as node:
        node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))
        node.call(lambda: node.sup.stress.observe(10**9))  # as when the connections pile up
        s = connect(node.port, "127.0.8.1")
        try:
            assert read_reply(s).startswith(b"220 ")
            _wait(lambda: node.stats()["gauges"]["connections.held"] == 1, "held")
            assert _in_workers(node) == 0
            assert node.stats()["gauges"]["connections.hold_engaged"] == 0, "no flood seen"
        finally:
            s.close()
