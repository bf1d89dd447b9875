"""Stress mode switching on and off with the load, what it tightens, the pregreet test with its
cached verdicts, and the tarpit's held greeting for suspects; end to end on loopback."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

from mailmoat import logs
from mailmoat.config import LogSettings
from tests.gateway import RunningGateway, running_gateway
from tests.server.dos_support import closed, connect, read_all, read_line, read_reply


def _counter(gw: RunningGateway, name: str) -> int:
    assert gw.gateway is not None
    return gw.gateway.stats.get(name)


def _greeted(port: int, src: str) -> socket.socket:
    s = connect(port, src)
    assert read_line(s).startswith(b"220 ")
    return s


def _wait_for(predicate: object, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_stress_mode_starts_cuts_idle_clients_and_ends(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="json"), out)
    settings = {
        "admission.max_connections": 10,
        "stress.start_at": 0.3,  # on above 3 connections
        "stress.stop_at": 0.2,  # off below 2 ...
        "stress.hold": 1.5,  # ... and 1.5 s after the load was last above 3
        "stress.greeting": 0.3,
        "timeouts.greeting": 30.0,
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        assert gw.gateway is not None
        stress = gw.gateway.stress
        idle = [_greeted(gw.port, f"127.0.30.{i}") for i in range(1, 4)]
        time.sleep(0.4)  # older than the stress deadline, younger than the normal one
        assert not stress.active
        fourth = _greeted(gw.port, "127.0.30.4")
        assert _wait_for(lambda: _counter(gw, "stress.started") == 1)
        started = time.monotonic()
        # every idle client is now held to 0.3 s: the old ones are closed within the
        # one-second spread, the new one when its 0.3 s are up
        for s in [*idle, fourth]:
            assert read_all(s, 3) == b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"
        assert time.monotonic() - started < 1.5
        # the load is gone: stress mode ends after the hold time, deadlines relax again
        assert _wait_for(lambda: not stress.active)
        assert _counter(gw, "stress.stopped") == 1
        with _greeted(gw.port, "127.0.30.5") as s:
            assert not closed(s, 0.6)
        for s in [*idle, fourth]:
            s.close()
    switches = [json.loads(line) for line in out.getvalue().splitlines()]
    switches = [d for d in switches if d["event"].startswith("stress_")]
    assert [d["event"] for d in switches] == ["stress_on", "stress_off"]
    assert switches[0]["level"] == "warning" and switches[0]["connections"] == 4


def test_stress_mode_tightens_the_per_address_limit_and_errors(tmp_path: Path) -> None:
    settings = {
        "admission.max_connections": 10,
        "stress.start_at": 0.1,  # on above 1 connection
        "stress.stop_at": 0.1,
        "stress.hold": 0.0,
        "stress.max_per_ip": 2,
        "stress.max_errors": 1,
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        load = [_greeted(gw.port, "127.0.31.1"), _greeted(gw.port, "127.0.31.2")]
        assert gw.gateway is not None and gw.gateway.stress.active
        a = _greeted(gw.port, "127.0.31.3")
        b = _greeted(gw.port, "127.0.31.3")
        with connect(gw.port, "127.0.31.3") as s:
            assert read_all(s).startswith(b"421 4.7.0 mx.mailmoat.test Error: too many connections")
        a.sendall(b"MAIL FROM:<a@b.test>\r\n")
        got = read_all(a)
        assert got.startswith(b"503 5.5.1")
        closing = b"421 4.7.0 mx.mailmoat.test Error: too many errors, closing connection\r\n"
        assert got.endswith(closing)
        assert _counter(gw, "tarpit.stress_closed") == 1
        for s in [*load, a, b]:
            s.close()


def test_pregreet_talker_is_refused_and_remembered(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"pregreet.wait": 0.3}) as gw:
        with connect(gw.port, "127.0.32.1") as s:
            s.sendall(b"EHLO bot.test\r\n")  # before the greeting
            started = time.monotonic()
            got = read_all(s)
            took = time.monotonic() - started
        assert got == b"554 5.5.0 Error: client sent data before the greeting\r\n"
        assert took > 0.2
        assert _wait_for(lambda: _counter(gw, "pregreet.failed") == 1)
        with connect(gw.port, "127.0.32.1") as s:
            started = time.monotonic()
            got = read_all(s)
            assert time.monotonic() - started < 0.2
        assert got == (
            b"421 4.7.0 mx.mailmoat.test Error: you talked before the greeting, try again later\r\n"
        )
        assert _counter(gw, "refused.pregreet") == 1


def test_pregreet_patient_client_is_greeted_at_once_next_time(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"pregreet.wait": 0.3}) as gw:
        with connect(gw.port, "127.0.33.1") as s:
            started = time.monotonic()
            assert read_line(s).startswith(b"220 ")
            assert time.monotonic() - started > 0.25
            s.sendall(b"EHLO mta.test\r\n")
            assert read_reply(s).startswith(b"250-")
        assert _wait_for(lambda: _counter(gw, "pregreet.passed") == 1)
        with connect(gw.port, "127.0.33.1") as s:
            started = time.monotonic()
            assert read_line(s).startswith(b"220 ")
            assert time.monotonic() - started < 0.2


def test_pregreet_spares_trusted_upstreams(tmp_path: Path) -> None:
    settings = {"pregreet.wait": 1.0, "admission.allow_networks": ["127.0.34.0/24"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with connect(gw.port, "127.0.34.1") as s:
            started = time.monotonic()
            assert read_line(s).startswith(b"220 ")
            assert time.monotonic() - started < 0.5


def test_suspect_gets_a_slow_greeting(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"tarpit.suspect_delay": 0.4}) as gw:
        assert gw.gateway is not None
        gw.call(gw.gateway.defences.bans.strike, "127.0.35.1", "test")
        for src, slow in (("127.0.35.1", True), ("127.0.35.2", False)):
            with connect(gw.port, src) as s:
                started = time.monotonic()
                assert read_line(s).startswith(b"220 ")
                took = time.monotonic() - started
            assert (took > 0.35) if slow else (took < 0.2)
        assert _counter(gw, "tarpit.suspect") == 1


def test_greeting_at_accept_time_is_sent_once_and_left_to_the_session_for_an_early_talker(
    tmp_path: Path,
) -> None:
    """Without pregreet.wait the listener writes the 220 on the bare socket (so the client
    reads it while the session is set up). A client whose bytes already wait when its
    connection is accepted is left to the session, which greets it as before: one 220, then
    the answer to what it sent (only a held greeting, pregreet.wait, refuses early talkers)."""
    with running_gateway(tmp_path / "md") as gw:
        with connect(gw.port) as s:
            assert read_line(s) == b"220 mx.mailmoat.test ESMTP\r\n"
            s.sendall(b"NOOP\r\n")
            assert read_line(s).startswith(b"250 ")  # the first reply after the 220: no second 220
        held = threading.Event()

        def stall() -> None:  # the loop sleeps: the next connection waits in the kernel
            held.set()
            time.sleep(0.5)

        gw.loop.call_soon_threadsafe(stall)
        assert held.wait(5)
        with connect(gw.port) as s:
            s.sendall(b"EHLO early.test\r\n")
            got = read_all(s, 3.0)
        assert got.startswith(b"220 mx.mailmoat.test ESMTP\r\n250-mx.mailmoat.test\r\n")
        assert got.count(b"220 ") == 1
