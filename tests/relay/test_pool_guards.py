"""The downstream pool's promises, pinned where mutation testing (scripts/mutation over
relay/pool.py) found nothing holding them: a waiter woken for a free connection that leaves
passes its turn on, and the pool's one idle timer is armed for the next expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailmoat.relay.pool import DownstreamPool
from tests.relay.relay_support import FakeFactory, SettingsFactory
from tests.support.waiting import wait_for


async def _waiting(*tasks: asyncio.Task[object]) -> None:
    """Let each new acquire() run up to its wait for a free connection (no I/O on the way:
    a few turns of the event loop)."""
    for _ in range(5):
        await asyncio.sleep(0)
    assert not any(t.done() for t in tasks)


async def test_a_woken_waiter_that_leaves_passes_its_turn_on(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    """Pool of one, in use; two acquires wait. The connection comes back and wakes the first,
    which is cancelled before it runs: the second gets the connection at once, not a 451
    after pool_wait."""
    fake = await fake_downstream()
    pool = DownstreamPool(make_settings(fake.port, pool_size=1, pool_wait=10.0))
    try:
        held = await pool.acquire()
        first = asyncio.create_task(pool.acquire())
        second = asyncio.create_task(pool.acquire())
        await _waiting(first, second)
        pool.release(held)  # wakes `first`
        first.cancel()
        client = await asyncio.wait_for(second, 30)
        assert client is held  # the idle connection, handed on
        assert first.cancelled()
        assert (pool.open, pool.busy, pool.idle) == (1, 1, 0)
        pool.release(client)
    finally:
        await pool.close()
    assert fake.connections == 1


async def test_the_idle_timer_is_armed_for_the_next_expiry_never_in_the_past(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timer for the pool: after the older idle connection goes, it is armed for the
    younger one's own expiry. A timer armed in the past would fire again at once, every turn of
    the event loop, until then (a core spent spinning while a connection sits idle)."""
    idle_timeout = 0.6
    fake = await fake_downstream()
    pool = DownstreamPool(make_settings(fake.port, idle_timeout=idle_timeout))
    loop = asyncio.get_running_loop()
    armed: list[tuple[float, float]] = []  # (when armed, for when)
    call_at = loop.call_at

    def spy(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        if getattr(callback, "__func__", None) is DownstreamPool._sweep:
            armed.append((loop.time(), when))
        return call_at(when, callback, *args, **kw)

    monkeypatch.setattr(loop, "call_at", spy)  # call_later arms through call_at too
    try:
        older, younger = await pool.acquire(), await pool.acquire()
        pool.release(older)
        await asyncio.sleep(0.3)  # the younger comes back 0.3 s later: its own expiry
        pool.release(younger)
        await wait_for(lambda: pool.open == 0, "both idle connections closed")
    finally:
        await pool.close()
    # once at the first release, once for the younger (not if the first timer fired so late,
    # on a loaded machine, that both had expired by then)
    assert 1 <= len(armed) <= 4, armed
    assert all(when > now for now, when in armed), armed
