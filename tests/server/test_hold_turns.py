"""The supervisor's hold looks at most HOLD_PER_TURN readable connections in one turn of the
event loop: a flood's clients leave together, and a turn that closed hundreds of them made
every other connection wait (the rest are reported again next turn, none is lost)."""

from __future__ import annotations

import asyncio
import itertools
import socket

from mailmoat.limits import HOLD_PER_TURN
from mailmoat.policy.base import Client
from mailmoat.server.hold import GreetedHold
from tests.support.waiting import wait_for

HELD = 100


async def test_clients_that_leave_together_are_looked_at_over_several_turns() -> None:
    loop = asyncio.get_running_loop()
    talked: list[socket.socket] = []
    left: list[socket.socket] = []
    hold = GreetedHold(lambda s, c: talked.append(s), lambda s, c: left.append(s))
    hold.loop = loop
    pairs = [socket.socketpair() for _ in range(HELD)]
    per_turn: list[int] = []
    try:
        for i, (ours, _) in enumerate(pairs):
            ours.setblocking(False)
            assert hold.hold(ours, Client(f"127.0.{i}.1", 25), 30.0)
        for _, theirs in pairs[: HELD // 2]:
            theirs.close()  # these leave after the 220
        for _, theirs in pairs[HELD // 2 :]:
            theirs.send(b"E")  # these talk

        def count() -> None:  # connections looked at so far, once per turn
            per_turn.append(len(left) + len(talked))
            if per_turn[-1] < HELD:
                loop.call_soon(count)

        loop.call_soon(count)
        await wait_for(lambda: len(left) + len(talked) == HELD, "every connection looked at")
        assert len(left) == len(talked) == HELD // 2 and len(hold) == 0
        steps = [b - a for a, b in itertools.pairwise(per_turn)]
        assert max(steps) <= HOLD_PER_TURN, steps
    finally:
        for ours, theirs in pairs:
            ours.close()
            theirs.close()
