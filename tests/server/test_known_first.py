"""A known client's connection is admitted before the connections that reached the kernel's
queue ahead of it (server/listener.py with the supervisor's `first` test): after a stall of
the supervisor's loop, a regular sender does not wait behind a flood's refusals. A real
supervisor and its worker processes in this process; the order is read from its admissions."""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import pytest

from mailmoat.policy.base import Client
from mailmoat.server.front import Front
from mailmoat.server.listener import Listener
from tests.server.test_hold import in_process
from tests.server.test_workers import _wait
from tests.support.raw_client import connect, read_reply
from tests.support.waiting import DEADLINE, wait_for

FLOOD = 40  # from a denied network: each one refused at admission


@pytest.mark.parametrize("known", ["127.0.8.1", "127.0.9.30"])
def test_a_known_client_is_admitted_before_the_refusals_queued_ahead_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, known: str
) -> None:
    order: list[str] = []
    admit = Front._admit

    def spy(self: Front, sock: object, client: Client) -> None:
        order.append(client.address)
        admit(self, sock, client)  # type: ignore[arg-type]

    monkeypatch.setattr(Front, "_admit", spy)
    settings = {
        "domains.relay_networks": ["127.0.8.0/24"],
        "admission.deny_networks": ["127.0.7.0/24"],
    }
    with in_process(tmp_path, **settings) as node:
        if known == "127.0.9.30":  # an address the supervisor vouches for (it delivered)
            node.call(lambda: node.sup.hold.vouch(known))
        stalled, release = threading.Event(), threading.Event()

        def stall() -> None:
            stalled.set()
            release.wait(DEADLINE)  # a long turn of the supervisor's loop

        node.loop.call_soon_threadsafe(stall)
        assert stalled.wait(DEADLINE)
        order.clear()
        flood = []
        try:
            # the handshakes complete in the kernel meanwhile: all queued, the known one last
            flood = [connect(node.port, f"127.0.7.{i}") for i in range(1, FLOOD + 1)]
            ours = connect(node.port, known)
            release.set()
            assert read_reply(ours).startswith(b"220 ")
            _wait(lambda: len(order) == FLOOD + 1, "all admitted or refused")
            assert order[0] == known, order[:3]
            assert sorted(order[1:]) == sorted(f"127.0.7.{i}" for i in range(1, FLOOD + 1))
            for s in flood:
                assert read_reply(s).startswith(b"421 ")  # refused all the same
            ours.close()
        finally:
            release.set()
            for s in flood:
                s.close()


class _Scarce:
    """A real listening socket whose accept() fails with EMFILE after `room` connections, as
    a process out of descriptors would, until `room` is raised."""

    def __init__(self, room: int) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.room = room

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, tuple[str, int]]:
        if self.room <= 0:
            raise OSError(errno.EMFILE, "Too many open files")
        self.room -= 1
        return self.sock.accept()

    def close(self) -> None:
        self.sock.close()


async def test_out_of_descriptors_with_connections_taken_ahead_does_not_pause() -> None:
    """The connections taken from the kernel ahead of their admission hold descriptors; running
    out of them then only ends the taking (the queued ones free theirs as they are admitted or
    refused), it does not stop accepting for everyone for EMFILE_PAUSE."""
    scarce = _Scarce(room=3)
    seen: list[tuple[str, int]] = []

    def refuse(conn: socket.socket, address: tuple[str, int]) -> None:
        seen.append(address)
        conn.close()  # as a refusal does: its descriptor free again
        scarce.room += 1

    listener = Listener([scarce], refuse, lambda _: False)  # type: ignore[list-item]
    paused: list[bool] = []
    pause = listener._pause
    listener._pause = lambda: (paused.append(True), pause())[1]  # type: ignore[method-assign]
    clients = []
    try:
        clients = [socket.create_connection(scarce.sock.getsockname(), DEADLINE) for _ in range(5)]
        listener.start()
        await wait_for(lambda: len(seen) == 5, "all five taken, three first")
        assert not paused, "out of descriptors with connections queued: no pause"
    finally:
        listener.close()
        for s in clients:
            s.close()
