"""Stress mode switching on and off with the load, what it tightens, the pregreet test with its
cached verdicts, and the tarpit's held greeting for suspects; end to end on loopback.

A held greeting is shown by its minimum wait, timed from before the connection; a greeting that
is not held, by a client that talks at once and is answered (a held greeting would refuse it as
an early talker), never by a wall-clock upper bound."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path

from mailmoat import logs
from mailmoat.config import LogSettings
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.raw_client import closed, connect, read_all, read_line, read_reply
from tests.support.waiting import DEADLINE, wait_until

EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""


def _counter(gw: RunningGateway, name: str) -> int:
    assert gw.gateway is not None
    return gw.gateway.stats.get(name)


def _wait_counter(gw: RunningGateway, name: str, value: int) -> None:
    wait_until(lambda: _counter(gw, name) == value, f"counter {name} == {value}")


def _greeted(port: int, src: str) -> socket.socket:
    s = connect(port, src)
    assert read_line(s).startswith(b"220 ")
    return s


def _greeted_without_a_hold(port: int, src: str) -> None:
    """A client that talks at once, before its greeting: answered after one 220, so the
    greeting was not held (a held one, pregreet or tarpit, refuses an early talker)."""
    with connect(port, src, timeout=DEADLINE) as s:
        s.sendall(b"EHLO mta.test\r\n")
        assert read_line(s, DEADLINE).startswith(b"220 ")
        assert read_reply(s, DEADLINE).startswith(b"250-"), "held and refused as an early talker"


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
        started = time.monotonic()
        fourth = _greeted(gw.port, "127.0.30.4")
        _wait_counter(gw, "stress.started", 1)
        # every idle client is now held to 0.3 s (timeouts.greeting is 30 s, beyond any wait
        # here): the old ones are closed within the one-second spread, the new one when its
        # 0.3 s are up and not before
        timeout = b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"
        assert read_all(fourth, DEADLINE) == timeout
        assert time.monotonic() - started >= 0.3 - EPSILON
        for s in idle:
            assert read_all(s, DEADLINE) == timeout
        # the load is gone: stress mode ends after the hold time, deadlines relax again
        wait_until(lambda: not stress.active, "stress mode off")
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
        assert gw.gateway is not None
        stress = gw.gateway.stress
        wait_until(lambda: stress.active, "stress mode on")
        a = _greeted(gw.port, "127.0.31.3")
        b = _greeted(gw.port, "127.0.31.3")
        with connect(gw.port, "127.0.31.3") as s:
            assert read_all(s).startswith(b"421 4.7.0 mx.mailmoat.test Error: too many connections")
        a.sendall(b"MAIL FROM:<a@b.test>\r\n")
        got = read_all(a)
        assert got.startswith(b"503 5.5.1")
        closing = b"421 4.7.0 mx.mailmoat.test Error: too many errors, closing connection\r\n"
        assert got.endswith(closing)
        _wait_counter(gw, "tarpit.stress_closed", 1)
        for s in [*load, a, b]:
            s.close()


def test_pregreet_talker_is_refused_and_remembered(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"pregreet.wait": 0.3}) as gw:
        started = time.monotonic()  # the greeting is held from the accept, after this
        with connect(gw.port, "127.0.32.1") as s:
            s.sendall(b"EHLO bot.test\r\n")  # before the greeting
            got = read_all(s, DEADLINE)
            took = time.monotonic() - started
        assert got == b"554 5.5.0 Error: client sent data before the greeting\r\n"
        assert took >= 0.3 - EPSILON  # refused when the held greeting is due, not before
        _wait_counter(gw, "pregreet.failed", 1)
        # remembered: refused at connect, no held greeting this time
        with connect(gw.port, "127.0.32.1") as s:
            got = read_all(s, DEADLINE)
        assert got == (
            b"421 4.7.0 mx.mailmoat.test Error: you talked before the greeting, try again later\r\n"
        )
        _wait_counter(gw, "refused.pregreet", 1)


def test_pregreet_patient_client_is_greeted_at_once_next_time(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"pregreet.wait": 0.3}) as gw:
        started = time.monotonic()
        with connect(gw.port, "127.0.33.1") as s:
            assert read_line(s).startswith(b"220 ")
            assert time.monotonic() - started >= 0.3 - EPSILON  # held for pregreet.wait
            s.sendall(b"EHLO mta.test\r\n")
            assert read_reply(s).startswith(b"250-")
        _wait_counter(gw, "pregreet.passed", 1)
        _greeted_without_a_hold(gw.port, "127.0.33.1")
        assert _counter(gw, "pregreet.failed") == 0


def test_pregreet_spares_trusted_upstreams(tmp_path: Path) -> None:
    settings = {"pregreet.wait": 1.0, "admission.allow_networks": ["127.0.34.0/24"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        _greeted_without_a_hold(gw.port, "127.0.34.1")
        assert _counter(gw, "pregreet.failed") == 0


def test_suspect_gets_a_slow_greeting(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"tarpit.suspect_delay": 0.4}) as gw:
        assert gw.gateway is not None
        gw.call(gw.gateway.defences.bans.strike, "127.0.35.1", "test")
        started = time.monotonic()
        with connect(gw.port, "127.0.35.1") as s:
            assert read_line(s, DEADLINE).startswith(b"220 ")
        assert time.monotonic() - started >= 0.4 - EPSILON  # the suspect waits
        _greeted_without_a_hold(gw.port, "127.0.35.2")  # its neighbour does not
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
        assert held.wait(DEADLINE)
        with connect(gw.port) as s:
            s.sendall(b"EHLO early.test\r\n")
            # one 220, then the answer to EHLO (a second 220 would come before it)
            assert read_line(s, DEADLINE) == b"220 mx.mailmoat.test ESMTP\r\n"
            assert read_reply(s, DEADLINE).startswith(b"250-mx.mailmoat.test\r\n")
