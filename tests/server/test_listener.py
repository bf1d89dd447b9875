"""mailmoat's own accept loop: failures at the connect stage give a clear 4xx, deadline closes
are paced, and a burst of refused connections does not keep a session waiting."""

from __future__ import annotations

import asyncio
import itertools
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.limits import ADOPTS_PER_TURN, CLOSES_PER_TURN
from mailmoat.policy.base import Check, Client, HookResult
from mailmoat.server.gateway import CLOSE_BURST, CLOSE_RATE, Gateway
from mailmoat.store import MemoryStore
from tests.support.waiting import DEADLINE, wait_for


def _settings(tmp_path: Path, **overrides: Any) -> config.Settings:
    return config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "md"),
            **overrides,
        },
    )


async def _first_reply(port: int, src: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0))
    try:
        return await asyncio.wait_for(reader.read(1024), DEADLINE)
    finally:
        writer.close()


class Broken(Check):
    def connect(self, client: Client) -> HookResult:
        raise RuntimeError("directory unreachable")


class BrokenStore(MemoryStore):
    async def hit(self, key: str, window: float, cap: int) -> int:
        raise ConnectionError("store unreachable")


async def test_a_failing_connect_check_gives_421_not_a_silent_drop(tmp_path: Path) -> None:
    gw = Gateway(_settings(tmp_path), checks=[Broken()])
    port = (await gw.start())[0][1]
    try:
        assert await _first_reply(port) == b"421 4.3.0 Error: local error, try again later\r\n"
    finally:
        await gw.stop(grace=1)


async def test_a_failing_store_gives_421_and_releases_the_slot(tmp_path: Path) -> None:
    gw = Gateway(_settings(tmp_path), store=BrokenStore())
    port = (await gw.start())[0][1]
    try:
        assert await _first_reply(port) == b"421 4.3.0 Error: local error, try again later\r\n"
        await wait_for(
            lambda: gw.defences.admission.connections == 0 and not gw.sessions,
            "the slot given back",
        )
    finally:
        await gw.stop(grace=1)


async def test_deadline_closes_are_paced(tmp_path: Path) -> None:
    gw = Gateway(_settings(tmp_path))
    now = 100.0
    slots = [gw.close_slot(now) for _ in range(CLOSE_BURST + 100)]
    assert slots[:CLOSE_BURST] == [now] * CLOSE_BURST  # a burst may go at once
    assert slots[-1] == pytest.approx(now + 99 / CLOSE_RATE)  # the rest at CLOSE_RATE
    assert slots == sorted(slots)
    assert gw.close_slot(now + 10) == now + 10  # an idle queue starts afresh
    await gw.store.close()


async def test_a_burst_of_refusals_does_not_hold_up_a_session(tmp_path: Path) -> None:
    settings = _settings(tmp_path, **{"admission.deny_networks": ["127.0.60.0/24"]})
    gw = Gateway(settings)
    port = (await gw.start())[0][1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await reader.readline()).startswith(b"220 ")

        async def refused(i: int) -> bytes:
            return await _first_reply(port, f"127.0.60.{i % 200 + 1}")

        burst = [asyncio.ensure_future(refused(i)) for i in range(400)]
        # the session is answered in the middle of the burst (how fast is bench/'s question)
        writer.write(b"NOOP\r\n")
        assert (await asyncio.wait_for(reader.readline(), DEADLINE)).startswith(b"250 ")
        replies = await asyncio.gather(*burst)
        refusal = b"421 4.7.0 mx.mailmoat.test Error: access denied\r\n"
        assert all(r == refusal for r in replies)
        assert gw.stats.get("refused.denied") == 400 and gw.stats.get("closed.refused") == 400
        writer.close()
    finally:
        await gw.stop(grace=1)


async def test_closes_due_together_after_a_slow_turn_are_spread_over_turns(
    tmp_path: Path,
) -> None:
    """Forty idle clients pass their greeting deadline while the event loop is stalled: when it
    runs again, each turn closes at most CLOSES_PER_TURN of them (all forty were due at once,
    within CLOSE_BURST), so the other sessions wait for a few closes, not for forty."""
    # the deadline leaves room to open the forty on a busy machine (with 0.5 s the first
    # ones timed out before the last was open under load, and forty were never there at once)
    gw = Gateway(_settings(tmp_path, **{"timeouts.greeting": 2.0}))
    port = (await gw.start())[0][1]
    loop = asyncio.get_running_loop()
    clients = []
    per_turn: list[int] = []
    try:
        for i in range(40):  # one address per /24: no per-address or per-network cap
            clients.append(
                await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.{i}.1", 0))
            )
        await wait_for(lambda: len(gw.sessions) == 40, "40 sessions")
        assert gw.stats.get("closed.timeout") == 0  # none due before the slow turn
        time.sleep(2.2)  # a slow turn: every greeting deadline passes meanwhile

        def count() -> None:  # the closes so far, once per turn
            per_turn.append(gw.stats.get("closed.timeout"))
            if per_turn[-1] < 40:
                loop.call_soon(count)

        loop.call_soon(count)
        await wait_for(lambda: gw.stats.get("closed.timeout") == 40, "every client closed")
        steps = [b - a for a, b in itertools.pairwise(per_turn)]
        assert max(steps) <= CLOSES_PER_TURN, steps
    finally:
        for _, writer in clients:
            writer.close()
        await gw.stop(grace=1)


async def test_handed_over_connections_start_a_few_per_turn(tmp_path: Path) -> None:
    """Forty connections handed over at once (one link packet carries up to 64): their
    sessions start at most ADOPTS_PER_TURN per turn of the event loop, all of them greeted."""
    gw = Gateway(_settings(tmp_path))
    await gw.start()
    loop = asyncio.get_running_loop()
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    clients, per_turn = [], []
    try:
        for i in range(40):
            clients.append(
                await asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.{i}.1", 0))
            )
        accepted = [listener.accept() for _ in range(40)]

        def count() -> None:  # the sessions so far, once per turn
            per_turn.append(len(gw.sessions))
            if per_turn[-1] < 40:
                loop.call_soon(count)

        loop.call_soon(count)
        for sock, (address, client_port) in accepted:  # as a worker does for a packet
            sock.setblocking(False)
            gw.adopt(sock, Client(address, client_port), None, False)
        await wait_for(lambda: len(gw.sessions) == 40, "40 sessions")
        steps = [b - a for a, b in itertools.pairwise(per_turn)]
        assert max(steps) <= ADOPTS_PER_TURN, steps
        for reader, _ in clients:
            assert (await asyncio.wait_for(reader.readline(), DEADLINE)).startswith(b"220 ")
    finally:
        for _, writer in clients:
            writer.close()
        listener.close()
        await gw.stop(grace=1)
