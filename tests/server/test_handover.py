"""The supervisor hands the connections it decides on in one turn of its event loop to a
worker in one packet (one system call, one wake-up of the worker), counting each from the
decision on; connections a worker cannot take go to another."""

from __future__ import annotations

import array
import asyncio
import socket
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.server.front import LOCAL_SESSIONS
from mailmoat.server.link import MAX_FDS, Handover, Link, decode, socket_pair
from mailmoat.server.supervisor import Supervisor, WorkerProcess
from tests.support.waiting import wait_for


class FakeWorker:
    """A worker's end of the link as a bare socket: the test reads the packets themselves."""

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        ours, self.end = socket_pair()
        self.end.setblocking(False)
        proc: Any = SimpleNamespace(pid=10_000 + index, poll=lambda: 0)
        self.process = w = WorkerProcess(index, proc)
        w.link = Link(ours, lambda m, s: None, None, lambda: supervisor._lost(w))
        w.ready = True
        self.packets: list[tuple[list[Any], list[socket.socket]]] = []

    def read(self) -> int:
        """Packets waiting now, read; returns the number of hand-overs received so far."""
        room = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
        while True:
            try:
                data, ancdata, _, _ = self.end.recvmsg(65536, room)
            except BlockingIOError:
                break
            fds = array.array("i")
            for _, _, raw in ancdata:
                fds.frombytes(raw)
            self.packets.append((decode(data), [socket.socket(fileno=fd) for fd in fds]))
        return sum(len(messages) for messages, _ in self.packets)

    def close(self) -> None:
        self.end.close()
        for _, socks in self.packets:
            for sock in socks:
                sock.close()


def supervisor_with(tmp_path: Path, workers: int) -> tuple[Supervisor, list[FakeWorker]]:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "md"),
        },
    )
    supervisor = Supervisor(settings, workers)
    supervisor.loop = asyncio.get_running_loop()
    supervisor.stopping = True  # no worker is restarted here
    supervisor.slots.taken = LOCAL_SESSIONS  # its own places are taken: everything goes out
    supervisor.hold.limit = 0  # nothing held till it talks (server/hold.py): out at once
    fakes = [FakeWorker(supervisor, i) for i in range(workers)]
    supervisor.workers = [f.process for f in fakes]
    return supervisor, fakes


def admit(supervisor: Supervisor, n: int) -> list[tuple[socket.socket, socket.socket]]:
    """`n` connections admitted in this turn of the loop; (ours, the client's) each."""
    pairs = [socket.socketpair() for _ in range(n)]
    for i, (ours, _) in enumerate(pairs):
        supervisor.admitted(ours, Client(f"192.0.2.{i + 1}", 40000 + i), None, True)
    return pairs


async def test_a_burst_leaves_in_one_packet_counted_when_decided(tmp_path: Path) -> None:
    supervisor, (worker,) = supervisor_with(tmp_path, 1)
    pairs = admit(supervisor, 5)
    try:
        # counted at the decision, before anything was sent
        assert worker.process.sessions == 5 and len(supervisor.connections) == 5
        await wait_for(lambda: worker.read() == 5, "five hand-overs")
        ((messages, socks),) = worker.packets  # one packet, five descriptors
        assert [m.address for m in messages] == [f"192.0.2.{i}" for i in range(1, 6)]
        assert all(isinstance(m, Handover) and m.greeted for m in messages)
        for sock, (ours, client) in zip(socks, pairs, strict=True):
            assert ours.fileno() == -1  # the supervisor let go of its copy
            sock.send(b"220 from the worker\r\n")  # the descriptor is the client's connection
            assert client.recv(64) == b"220 from the worker\r\n"
        assert supervisor.stats.get("sessions.handed_over") == 5
    finally:
        worker.close()
        for ours, client in pairs:
            ours.close()
            client.close()


async def test_what_a_lost_worker_was_given_goes_to_another(tmp_path: Path) -> None:
    supervisor, (first, second) = supervisor_with(tmp_path, 2)
    pairs = admit(supervisor, 4)
    try:
        chosen = {w for w in (first, second) if w.process.sessions}
        (lost,) = chosen if len(chosen) == 1 else (first,)
        other = second if lost is first else first
        given = lost.process.sessions
        assert given > 0
        lost.process.link.close()  # it died before the end of the turn
        assert lost.process.sessions == 0
        await wait_for(lambda: other.read() == 4, "every hand-over at the other worker")
        assert other.process.sessions == 4
        assert all(w is other.process for _, w in supervisor.connections.values())
    finally:
        first.close()
        second.close()
        for ours, client in pairs:
            ours.close()
            client.close()


async def test_admission_decides_within_the_accept_call(tmp_path: Path) -> None:
    """With the in-memory store the connect stage (rates and bans included) never waits: the
    decision is made in the accept call itself, with no task and no loop turn in between
    (server/eager.py)."""
    supervisor, (worker,) = supervisor_with(tmp_path, 1)
    ours, client = socket.socketpair()
    try:
        supervisor._accept(ours, ("192.0.2.7", 40007))
        assert worker.process.sessions == 1  # decided: no loop turn has run yet
        assert client.recv(512).startswith(b"220 mx.test")  # greeted at once
        await wait_for(lambda: worker.read() == 1, "the hand-over")
    finally:
        worker.close()
        ours.close()
        client.close()
