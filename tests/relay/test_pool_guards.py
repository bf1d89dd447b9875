"""The downstream pool's promises, pinned where mutation testing (scripts/mutation over
relay/pool.py) found nothing holding them: a waiter woken for a free connection that leaves
passes its turn on."""

from __future__ import annotations

import asyncio

from mailmoat.relay.pool import DownstreamPool
from tests.relay.relay_support import FakeFactory, SettingsFactory


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
