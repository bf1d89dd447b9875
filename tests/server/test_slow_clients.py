"""Slow-client defence end to end: deadlines that trickled bytes do not move, the minimum data
rate, the session cap, the junk-command limit, and error replies that slow down and then close.
Small timeouts keep every test short. A deadline is shown to close the connection eventually
(within a generous bound) and never before its minimum, measured from before the event that
starts it; no test asserts that something took less than N seconds."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.raw_client import connect, read_all, read_line, read_reply
from tests.support.waiting import DEADLINE, wait_until

EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""


def _trickle(
    s: socket.socket, data: bytes, every: float, started: float, limit: float = DEADLINE
) -> tuple[bytes, float]:
    """Send `data` one byte every `every` seconds until the server closes or `limit` passes;
    returns (what the server said after the greeting, seconds from `started` until it closed).
    A deadline that each byte moved would never close: the client keeps sending until `limit`."""
    s.setblocking(False)
    got = b""
    i = 0
    while time.monotonic() - started < limit:
        try:
            s.send(data[i % len(data) : i % len(data) + 1])
        except OSError:
            break
        i += 1
        time.sleep(every)
        try:
            chunk = s.recv(4096)
        except BlockingIOError:
            continue
        except OSError:
            break
        if not chunk:
            break
        got += chunk
    return got, time.monotonic() - started


def _counter(gw: RunningGateway, name: str) -> int:
    assert gw.gateway is not None
    return gw.gateway.stats.get(name)  # a dict read; fine from this thread, also after stop


def _wait_counter(gw: RunningGateway, name: str, value: int) -> None:
    """Counters of a closing session are bumped as it closes: await them."""
    wait_until(lambda: _counter(gw, name) == value, f"counter {name} == {value}")


def test_trickling_does_not_move_the_greeting_deadline(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"timeouts.greeting": 0.6}) as gw:
        started = time.monotonic()  # the deadline runs from the greeting, sent after this
        with connect(gw.port, "127.0.20.1") as s:
            assert read_line(s).startswith(b"220 ")
            got, took = _trickle(s, b"EHLO slowloris.test", every=0.1, started=started)
        assert got == b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"
        assert took >= 0.6 - EPSILON
        _wait_counter(gw, "closed.timeout", 1)


def test_command_deadline_runs_from_the_last_reply(tmp_path: Path) -> None:
    settings = {"timeouts.greeting": 60.0, "timeouts.command": 0.6}
    with running_gateway(tmp_path / "md", **settings) as gw, connect(gw.port) as s:
        assert read_line(s).startswith(b"220 ")
        started = time.monotonic()  # the reply to HELO comes after this
        s.sendall(b"HELO c.test\r\n")
        assert read_line(s).startswith(b"250 ")
        got, took = _trickle(s, b"NOOP", every=0.1, started=started)
    assert got.endswith(b"421 4.4.2 Error: timeout exceeded, closing connection\r\n")
    assert took >= 0.6 - EPSILON


def _into_data(port: int) -> tuple[socket.socket, float]:
    """A session in DATA, and the time from just before DATA was sent (its 354 comes after)."""
    s = connect(port, "127.0.21.1")
    assert read_line(s).startswith(b"220 ")
    started = 0.0
    for line, code in (
        (b"HELO c.test\r\n", b"250"),
        (b"MAIL FROM:<a@b.test>\r\n", b"250"),
        (b"RCPT TO:<alice@example.test>\r\n", b"250"),
        (b"DATA\r\n", b"354"),
    ):
        started = time.monotonic()
        s.sendall(line)
        assert read_reply(s).startswith(code)
    return s, started


def test_data_below_the_minimum_rate_is_closed(tmp_path: Path) -> None:
    # 0.4 s of grace, then 2000 bytes/s: a client sending ~100 bytes/s is cut at about 0.45 s,
    # although it never stays silent for as long as timeouts.data.
    settings = {"timeouts.data": 0.4, "timeouts.min_data_rate": 2000}
    with running_gateway(tmp_path / "md", **settings) as gw:
        s, started = _into_data(gw.port)
        with s:
            got, took = _trickle(s, b"Subject: slow\r\n", every=0.01, started=started)
        assert got == b"421 4.4.2 Error: message data too slow, closing connection\r\n"
        assert took >= 0.4 - EPSILON  # never before the grace period
        _wait_counter(gw, "closed.min_data_rate", 1)
    assert not list((tmp_path / "md").glob("new/*"))


def test_silence_in_data_is_a_timeout(tmp_path: Path) -> None:
    settings = {"timeouts.data": 0.4, "timeouts.min_data_rate": 0}
    with running_gateway(tmp_path / "md", **settings) as gw:
        s, _ = _into_data(gw.port)
        with s:
            started = time.monotonic()
            s.sendall(b"Subject: x\r\n")
            got = read_all(s, DEADLINE)
            took = time.monotonic() - started
    assert got == b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"
    assert took >= 0.4 - EPSILON


def test_total_session_time_is_capped(tmp_path: Path) -> None:
    settings = {"timeouts.session": 0.8, "timeouts.command": 60.0}
    with running_gateway(tmp_path / "md", **settings) as gw:
        started = time.monotonic()  # the session starts after this
        with connect(gw.port) as s:
            assert read_line(s).startswith(b"220 ")
            s.sendall(b"HELO c.test\r\n")
            got = read_line(s)
            while time.monotonic() - started < DEADLINE and b"421" not in got:
                time.sleep(0.1)  # a well-formed command every 0.1 s, each answered at once
                try:
                    s.sendall(b"NOOP\r\n")
                except OSError:
                    break
                got += read_line(s)
            took = time.monotonic() - started
        assert got.endswith(b"421 4.4.2 Error: session time limit exceeded, closing connection\r\n")
        assert took >= 0.8 - EPSILON
        _wait_counter(gw, "closed.session_time", 1)


def test_junk_commands_are_limited(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"smtp.max_junk_commands": 3}) as gw:
        with connect(gw.port) as s:
            assert read_line(s).startswith(b"220 ")
            s.sendall(b"HELO c.test\r\n")
            read_line(s)
            for _ in range(3):
                s.sendall(b"NOOP\r\n")
                assert read_line(s).startswith(b"250 ")
            s.sendall(b"RSET\r\n")
            assert read_all(s) == b"421 4.7.0 Error: too many commands, closing connection\r\n"
        _wait_counter(gw, "closed.too_many_junk", 1)


def test_errors_past_the_threshold_are_delayed_then_the_session_closes(tmp_path: Path) -> None:
    settings = {
        "tarpit.error_threshold": 1,
        "tarpit.error_delay": 0.3,
        "smtp.max_errors": 3,
    }
    with running_gateway(tmp_path / "md", **settings) as gw, connect(gw.port) as s:
        assert read_line(s).startswith(b"220 ")
        s.sendall(b"MAIL FROM:<a@b.test>\r\n")  # 503: no HELO yet
        assert read_line(s).startswith(b"503 5.5.1")
        assert _counter(gw, "tarpit.delayed") == 0  # the first error is not delayed
        started = time.monotonic()
        s.sendall(b"MAIL FROM:<a@b.test>\r\n")
        assert read_line(s).startswith(b"503 5.5.1")
        assert time.monotonic() - started >= 0.3 - EPSILON  # past the threshold: 0.3 s at least
        assert _counter(gw, "tarpit.delayed") == 1
        s.sendall(b"RCPT TO:<a@example.test>\r\n")
        got = read_all(s, DEADLINE)
        assert got.startswith(b"503 5.5.1") and got.endswith(
            b"421 4.7.0 Error: too many errors, closing connection\r\n"
        )
        _wait_counter(gw, "rejected.bad_sequence", 3)
        assert _counter(gw, "tarpit.delayed") == 1  # the closing error is not delayed


def test_policy_refusals_count_as_errors_for_the_tarpit(tmp_path: Path) -> None:
    settings = {"tarpit.error_threshold": 1, "tarpit.error_delay": 0.3}
    with running_gateway(tmp_path / "md", **settings) as gw, connect(gw.port) as s:
        assert read_line(s).startswith(b"220 ")
        for line in (b"HELO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n"):
            s.sendall(line)
            assert read_line(s).startswith(b"250 ")
        for n in range(2):
            started = time.monotonic()
            s.sendall(b"RCPT TO:<victim@elsewhere.test>\r\n")
            assert read_line(s) == b"554 5.7.1 Relay access denied\r\n"
            # the first refusal is not delayed, the second (past the threshold) 0.3 s at least
            assert _counter(gw, "tarpit.delayed") == n
            if n:
                assert time.monotonic() - started >= 0.3 - EPSILON
        assert _counter(gw, "rejected.relay_access") == 2
