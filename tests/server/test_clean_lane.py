"""The clean lane (server/lane.py, `server.clean_lane`): one more worker process that serves only
known clients (domains.relay_networks, admission.allow_networks, addresses that delivered
lately) once the supervisor hands connections over; strangers never reach it, it takes at most
LANE_SESSIONS, and its death is handled like any worker's. A real supervisor and its worker
processes in this process."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from mailmoat.server import lane as lane_module
from mailmoat.server import supervisor as supervisor_module
from mailmoat.server.supervisor import LOCAL_SESSIONS
from tests.server.test_hold import PATIENT, InProcess, in_process
from tests.server.test_workers import _deliver, _greeted, _wait
from tests.support.raw_client import read_all

RELAY = {"domains.relay_networks": ["127.0.8.0/24"], **PATIENT}


@pytest.fixture(autouse=True)
def _long_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor_module, "HOLD_TIME", 60.0)  # a held client stays held


def _busy(node: InProcess) -> None:
    """The supervisor's own places taken: every connection goes out (as under any load)."""
    node.call(lambda: setattr(node.sup.slots, "taken", LOCAL_SESSIONS))


def _where(node: InProcess) -> tuple[int, int]:
    """Sessions in the clean lane's worker, and in the other workers (one snapshot)."""
    doc = node.stats()
    return doc["lane"]["sessions"], sum(w["sessions"] for w in doc["workers"])


def _closed(s: socket.socket) -> Any:
    return read_all(s, 20.0)


def test_known_clients_go_to_the_lane_and_strangers_never_do(tmp_path: Path) -> None:
    with in_process(tmp_path, **RELAY) as node:
        _busy(node)
        assert node.stats()["gauges"]["lane.ready"] == 1
        ours = _greeted(node.port, "127.0.8.1")  # in domains.relay_networks
        _wait(lambda: _where(node) == (1, 0), "the relay client in the lane")
        stranger = _greeted(node.port, "127.0.9.20")
        _wait(lambda: _where(node) == (1, 1), "the stranger in another worker")
        _deliver(stranger)  # its message accepted: its address is vouched for from now on
        _wait(lambda: _where(node) == (1, 0), "the stranger's session over")
        again = _greeted(node.port, "127.0.9.20")
        _wait(lambda: _where(node) == (2, 0), "a sender that delivered lately: in the lane")
        for s in (ours, again):
            _deliver(s)  # the lane serves them as any worker would
        _wait(lambda: _where(node) == (0, 0), "all served")
        assert node.stats()["counters"]["sessions.handed_over"] == 3


def test_the_lane_takes_at_most_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lane_module, "LANE_SESSIONS", 2)
    with in_process(tmp_path, **RELAY) as node:
        _busy(node)
        socks = [_greeted(node.port, f"127.0.8.{i}") for i in range(1, 4)]
        try:
            _wait(lambda: _where(node) == (2, 1), "two in the lane, the third elsewhere")
        finally:
            for s in socks:
                s.close()


def test_a_dead_lane_worker_is_replaced_and_known_clients_go_elsewhere_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor_module, "RESPAWN_DELAY", 5.0)  # time to look while it is down
    with in_process(tmp_path, **RELAY) as node:
        _busy(node)
        victim = node.stats()["lane"]["pid"]
        inside = _greeted(node.port, "127.0.8.1")
        _wait(lambda: _where(node) == (1, 0), "in the lane")
        os.kill(victim, signal.SIGKILL)
        assert _closed(inside) == b"", "its session went with it (nothing was acknowledged)"
        inside.close()
        _wait(lambda: node.stats()["gauges"]["lane.ready"] == 0, "the lane seen down")
        doc = node.stats()
        assert doc["counters"]["workers.restarted"] == 1
        assert doc["gauges"]["connections.active"] == 0, "its admission slot given back"
        meanwhile = _greeted(node.port, "127.0.8.2")
        _wait(lambda: sum(w["sessions"] for w in node.stats()["workers"]) == 1, "elsewhere")
        _deliver(meanwhile)
        _wait(lambda: node.stats()["gauges"]["lane.ready"] == 1, "a new lane worker")
        assert node.stats()["lane"]["pid"] != victim
        later = _greeted(node.port, "127.0.8.3")
        _wait(lambda: _where(node) == (1, 0), "known clients in the new lane")
        _deliver(later)


def test_without_the_lane_known_clients_share_the_workers(tmp_path: Path) -> None:
    with in_process(tmp_path, **RELAY, **{"server.clean_lane": False}) as node:
        _busy(node)
        doc = node.stats()
        assert "lane" not in doc and doc["gauges"]["lane.ready"] == 0
        assert len(doc["workers"]) == 2 and doc["gauges"]["workers.ready"] == 2
        ours = _greeted(node.port, "127.0.8.1")
        _wait(lambda: sum(w["sessions"] for w in node.stats()["workers"]) == 1, "in a worker")
        _deliver(ours)


def test_a_known_client_goes_to_the_lane_under_a_light_load_too(tmp_path: Path) -> None:
    """The supervisor's own places are free (a stranger would run there): a known client
    goes to the lane all the same, whose caches and downstream connections so stay warm."""
    with in_process(tmp_path, **RELAY) as node:
        ours = _greeted(node.port, "127.0.8.1")
        _wait(lambda: _where(node) == (1, 0), "in the lane")
        stranger = _greeted(node.port, "127.0.9.21")
        _wait(lambda: node.call(lambda: node.sup.slots.taken) == 1, "the stranger runs here")
        for s in (ours, stranger):
            _deliver(s)
        assert node.stats()["counters"]["sessions.run_here"] == 1
