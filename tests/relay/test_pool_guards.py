"""The downstream pool's promises, pinned where mutation testing (scripts/mutation over
relay/pool.py) found nothing holding them: a waiter woken for a free connection that leaves
passes its turn on, and the pool's one idle timer is armed for the next expiry."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailmoat.relay import DownstreamDelivery
from mailmoat.relay.pool import DownstreamPool
from tests.relay.relay_support import FakeFactory, MessageFactory, SettingsFactory
from tests.support.waiting import wait_for

EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""


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


async def test_the_idle_timer_is_armed_for_the_oldest_idle_connection_never_in_the_past(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One timer for the pool, armed for the expiry of the oldest idle connection: three come
    back 0.15 s apart, and after each sweep the timer is armed for the oldest one left (not
    the youngest, which would keep the others open past idle_timeout), never in the past
    (which would fire it again every turn of the event loop, a core spent spinning)."""
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
    back: list[float] = []
    try:
        clients = [await pool.acquire() for _ in range(3)]
        for client in clients:
            pool.release(client)
            back.append(loop.time())
            await asyncio.sleep(0.15)
        await wait_for(lambda: pool.open == 0, "the idle connections closed")
    finally:
        await pool.close()
    assert armed and armed[0][1] == pytest.approx(back[0] + idle_timeout, abs=0.01)
    for now, when in armed:
        assert when > now, armed
    for now, when in armed[1:]:  # armed by a sweep at `now`: for the oldest not yet expired
        left = [t for t in back if t > now - idle_timeout + 0.001]
        assert when == pytest.approx(min(left) + idle_timeout, abs=0.01), (armed, back)


async def test_a_connection_taken_again_is_not_closed_by_the_timer_of_its_earlier_idle(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    """The timer armed when the connection first came back fires while it is idle again, not
    for long enough yet: it stays until its own idle_timeout from its last return."""
    idle_timeout = 0.6
    fake = await fake_downstream()
    pool = DownstreamPool(make_settings(fake.port, idle_timeout=idle_timeout))
    loop = asyncio.get_running_loop()
    try:
        client = await pool.acquire()
        pool.release(client)
        await asyncio.sleep(0.3)
        assert await pool.acquire() is client
        pool.release(client)
        back = loop.time()
        await wait_for(lambda: pool.open == 0, "the idle connection closed")
        assert loop.time() - back >= idle_timeout - EPSILON
    finally:
        await pool.close()
    assert fake.connections == 1


async def test_a_connection_that_errored_is_not_kept_idle(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """A connection the client no longer calls usable (here: garbage answered RCPT) is closed
    when it comes back, not parked among the idle ones holding a slot."""
    fake = await fake_downstream(rcpt=lambda a: b"garbage\r\n")
    d = DownstreamDelivery(make_settings(fake.port, idle_timeout=60.0))
    try:
        assert (await d.deliver(make_message())).reply.code == 451
        assert d.pool.idle == 0
        await wait_for(lambda: d.pool.open == 0, "the errored connection closed")
    finally:
        await d.close()
