"""A sender that delivered lately is not held (server/hold.py `vouch`): while a greet-and-leave
flood keeps the hold engaged, a new connection from an address whose session had a message
accepted goes to a worker at once, before its first byte, whether that session ran in a worker
or in the supervisor; an address that only talked, or had its message refused, is held as
before. A real supervisor and its two worker processes in this process."""

from __future__ import annotations

import asyncio
import socket
import threading
from pathlib import Path

import pytest

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.limits import ADOPTS_PER_TURN, HOLD_TRIGGER
from mailmoat.policy.base import Client
from mailmoat.server import supervisor as supervisor_module
from mailmoat.server.gateway import Gateway
from mailmoat.server.hold import VOUCHED
from mailmoat.server.supervisor import LOCAL_SESSIONS, Supervisor
from tests.server.test_hold import PATIENT, InProcess, _in_workers, in_process
from tests.server.test_workers import _deliver, _greeted, _wait
from tests.support.raw_client import read_reply
from tests.support.waiting import DEADLINE


def _flood_seen(node: InProcess) -> None:
    node.call(lambda: node.sup.hold.saw_leaving(HOLD_TRIGGER))  # as under a flood
    assert node.stats()["gauges"]["connections.hold_engaged"] == 1


def _handed(node: InProcess) -> int:
    """Sessions the supervisor counts in its workers (its `Closed` messages, with their
    `delivered`, taken into account)."""
    return int(node.stats()["gauges"]["sessions.handed"])


def _all_go_out(node: InProcess) -> None:
    node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))


def _next_connection(node: InProcess, src: str) -> tuple[socket.socket, str]:
    """A new silent connection from `src`: 'held' or 'handed over'."""
    s = _greeted(node.port, src)
    _wait(
        lambda: node.stats()["gauges"]["connections.held"] == 1 or _in_workers(node) == 1,
        "held or handed over",
    )
    return s, "held" if node.stats()["gauges"]["connections.held"] == 1 else "handed over"


def _refused_message(s: socket.socket) -> None:
    """A session that talks, but whose only recipient is refused: no message accepted."""
    for line in (b"EHLO client.test", b"MAIL FROM:<bob@sender.test>"):
        s.sendall(line + b"\r\n")
        assert read_reply(s).startswith(b"250")
    s.sendall(b"RCPT TO:<alice@elsewhere.test>\r\n")
    assert read_reply(s).startswith(b"5")
    s.sendall(b"QUIT\r\n")
    assert read_reply(s).startswith(b"221")
    s.close()


@pytest.fixture(autouse=True)
def _long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)  # held till it talks


def test_a_sender_that_delivered_through_a_worker_is_handed_over_at_once(tmp_path: Path) -> None:
    with in_process(tmp_path, **PATIENT) as node:
        _all_go_out(node)
        _flood_seen(node)
        first, how = _next_connection(node, "127.0.9.1")
        assert how == "held", "not known yet: held like any client"
        _deliver(first)  # its EHLO takes it to a worker, which delivers
        _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 1, "first session over")
        _wait(lambda: _handed(node) == 0 and _in_workers(node) == 0, "its session over, told")
        again, how = _next_connection(node, "127.0.9.1")
        try:
            assert how == "handed over", "a sender that delivered lately is not held"
            assert node.stats()["gauges"]["connections.hold_engaged"] == 1, "flood still seen"
            stranger, how = _next_connection(node, "127.0.9.2")  # beside it: still held
            stranger.close()
            assert how == "held"
            _deliver(again)  # and it is served as before
        finally:
            again.close()
        _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 2, "served")


def test_a_sender_that_delivered_in_the_supervisor_is_not_held_later(tmp_path: Path) -> None:
    with in_process(tmp_path, **PATIENT) as node:
        _deliver(_greeted(node.port, "127.0.9.3"))  # a light load: run in the supervisor
        _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 1, "session over")
        assert node.stats()["counters"]["sessions.run_here"] == 1
        _wait(lambda: node.call(lambda: node.sup.slots.taken) == 0, "its place given back")
        _all_go_out(node)
        _flood_seen(node)
        s, how = _next_connection(node, "127.0.9.3")
        s.close()
        assert how == "handed over"


def test_a_session_that_talked_but_delivered_nothing_vouches_for_nobody(tmp_path: Path) -> None:
    with in_process(tmp_path, **PATIENT) as node:
        _all_go_out(node)
        _flood_seen(node)
        first, how = _next_connection(node, "127.0.9.4")
        assert how == "held"
        _refused_message(first)  # handed over when it talks; its recipient refused
        _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 1, "session over")
        _wait(lambda: _handed(node) == 0 and _in_workers(node) == 0, "its session over, told")
        s, how = _next_connection(node, "127.0.9.4")
        s.close()
        assert how == "held"


def test_a_known_sender_is_handed_over_before_the_rest_of_the_turn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its hand-over does not wait for the end of the supervisor's turn (a flood's 64
    accepts and more): a worker answers its EHLO while that turn still runs."""
    armed = threading.Event()
    turn_over = threading.Event()
    accept = Supervisor._accept

    def long_turn(self: Supervisor, sock: socket.socket, address: tuple[str, int]) -> None:
        accept(self, sock, address)
        if armed.is_set() and address[0] == "127.0.9.5":
            turn_over.wait(DEADLINE)  # the rest of a long turn of accepts

    monkeypatch.setattr(Supervisor, "_accept", long_turn)
    with in_process(tmp_path, **PATIENT) as node:
        _all_go_out(node)
        _flood_seen(node)
        _deliver(_greeted(node.port, "127.0.9.5"))  # held, then delivered by a worker
        _wait(lambda: node.stats()["counters"].get("closed.quit", 0) == 1, "session over")
        _wait(lambda: _handed(node) == 0 and _in_workers(node) == 0, "its session over, told")
        armed.set()
        s = _greeted(node.port, "127.0.9.5")  # the 220 goes out at accept
        try:
            s.sendall(b"EHLO client.test\r\n")
            answer = read_reply(s, 10.0)
            assert not turn_over.is_set()
            assert answer.startswith(b"250"), "a worker answered within the supervisor's turn"
        finally:
            turn_over.set()
            s.close()


def test_a_worker_starts_a_vouched_clients_session_before_those_waiting(
    tmp_path: Path,
) -> None:
    """A packet of hand-overs is started ADOPTS_PER_TURN a turn, in order; one marked VOUCHED
    by the supervisor goes first, however many wait (a real Gateway as a worker has it; what
    it records is the order in which it would start the sessions)."""
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],  # a worker's Gateway: it never listens
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "Maildir"),
            "dns.checks": False,
        },
    )
    gateway = Gateway(settings, defences=Defences)
    loop = asyncio.new_event_loop()
    gateway.loop = loop
    started: list[str] = []

    def start_session(sock: object, client: Client, verdict: object, greeted: bool) -> None:
        started.append(client.address)

    gateway._adopt_now = start_session  # type: ignore[method-assign]
    try:
        for i in range(1, 3 * ADOPTS_PER_TURN):
            gateway.adopt(None, Client(f"192.0.2.{i}", 25), None, True)  # type: ignore[arg-type]
        known = Client("198.51.100.7", 25)
        known.tag(VOUCHED)
        gateway.adopt(None, known, None, True)  # type: ignore[arg-type]
        loop.run_until_complete(asyncio.sleep(0.01))
        assert started == ["198.51.100.7", *(f"192.0.2.{i}" for i in range(1, 3 * ADOPTS_PER_TURN))]
        assert not known.has(VOUCHED), "the mark does not outlive the hand-over"
    finally:
        loop.close()
