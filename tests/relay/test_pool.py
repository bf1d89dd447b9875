"""The connection pool: bounded, reused, recycled, and honest when it is full."""

from __future__ import annotations

import asyncio
import time

from mailmoat.relay import DownstreamDelivery
from tests.relay.relay_support import FakeFactory, MessageFactory, SettingsFactory
from tests.support.waiting import wait_for

EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""


async def test_never_more_than_pool_size_connections(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(command_delay=0.01)
    settings = make_settings(fake.port, pool_size=3, max_messages_per_connection=2)
    d = DownstreamDelivery(settings)
    seen_open: list[int] = []

    async def sample() -> None:
        while True:
            seen_open.append(d.pool.open)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    try:
        results = await asyncio.gather(
            *(d.deliver(make_message(queue_id=f"Q{i}")) for i in range(30))
        )
    finally:
        sampler.cancel()
    await d.close()
    assert all(r.accepted for r in results)
    assert len(fake.messages) == 30
    assert fake.max_concurrent <= 3, f"downstream saw {fake.max_concurrent} at once"
    assert fake.max_concurrent == 3  # and the pool did use all of them
    assert fake.connections >= 15  # two messages per connection, then a new one
    assert max(seen_open) <= 3
    assert d.pool.open == 0 and fake.concurrent == 0


async def test_idle_connection_is_reused_without_rset(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port))
    for _ in range(3):
        assert (await d.deliver(make_message())).accepted
    assert (fake.connections, d.pool.open, d.pool.idle) == (1, 1, 1)
    assert b"RSET" not in fake.lines
    await d.close()
    assert fake.lines[-1] == b"QUIT" and d.pool.open == 0


async def test_connection_closed_after_idle_timeout(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port, idle_timeout=0.2))
    assert (await d.deliver(make_message())).accepted
    await wait_for(lambda: d.pool.open == 0, "the idle connection closed")
    await wait_for(lambda: fake.concurrent == 0, "the downstream saw it close")
    assert fake.lines[-1] == b"QUIT"
    await d.close()


async def test_each_idle_connection_closes_after_its_own_idle_timeout(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """One timer for the pool: the connection that came back first closes first, the other
    stays until its own idle time is over, and one taken again in between is not closed.
    Shown by minimums: neither closes before idle_timeout has passed since it came back."""
    idle_timeout = 1.0
    fake = await fake_downstream(command_delay=0.01)
    d = DownstreamDelivery(make_settings(fake.port, idle_timeout=idle_timeout))
    loop = asyncio.get_running_loop()
    sent = loop.time()  # both come back after this
    assert all(
        r.accepted for r in await asyncio.gather(*(d.deliver(make_message()) for _ in range(2)))
    )
    assert d.pool.idle == 2
    await asyncio.sleep(0.2)
    reused = loop.time()  # the one taken again comes back after this
    assert (await d.deliver(make_message())).accepted
    assert fake.connections == 2, "an idle connection was reused, not closed"
    await wait_for(lambda: d.pool.open <= 1, "the older one closed")
    assert loop.time() - sent >= idle_timeout - EPSILON
    await wait_for(lambda: d.pool.open == 0, "the reused one closed")
    assert loop.time() - reused >= idle_timeout - EPSILON  # its own idle time, not the first's
    assert d.pool.idle == 0 and fake.connections == 2
    await d.close()


async def test_pool_exhausted_gives_451_4_3_2_after_pool_wait(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(on_data="silent")
    settings = make_settings(fake.port, pool_size=1, pool_wait=0.2, data_timeout=3.0)
    d = DownstreamDelivery(settings)
    first = asyncio.create_task(d.deliver(make_message(queue_id="Q1")))
    await wait_for(lambda: fake.connections == 1, "the first delivery connected")
    started = time.monotonic()
    second = await d.deliver(make_message(queue_id="Q2"))
    waited = time.monotonic() - started
    assert (second.accepted, second.reply.code, second.reply.enhanced) == (False, 451, "4.3.2")
    assert "busy" in second.reply.text.lower()
    assert waited >= 0.2 - EPSILON  # it waited pool_wait for a connection
    r1 = await first
    assert (r1.accepted, r1.reply.code) == (False, 451)  # timed out: the connection was dropped
    await d.close()
    assert fake.max_concurrent == 1


async def test_waiter_gets_the_connection_when_it_comes_free(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(command_delay=0.05)
    d = DownstreamDelivery(make_settings(fake.port, pool_size=1, pool_wait=2.0))
    results = await asyncio.gather(*(d.deliver(make_message()) for _ in range(4)))
    await d.close()
    assert all(r.accepted for r in results)
    assert fake.connections == 1 and fake.max_concurrent == 1


async def test_errored_connection_is_discarded(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(rcpt=lambda a: b"garbage\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    assert (await d.deliver(make_message())).reply.code == 451
    fake.rcpt = lambda a: b"250 2.1.5 ok\r\n"
    assert (await d.deliver(make_message())).accepted
    await d.close()
    assert fake.connections == 2


async def test_stale_idle_connection_is_retried_on_a_new_one(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    calls = 0

    def mail() -> bytes:
        nonlocal calls
        calls += 1
        # second transaction on the first connection: the server has timed it out meanwhile
        return b"421 4.4.2 idle timeout\r\n" if calls == 2 else b"250 2.1.0 ok\r\n"

    fake = await fake_downstream(mail=mail)
    d = DownstreamDelivery(make_settings(fake.port))
    assert (await d.deliver(make_message())).accepted
    result = await d.deliver(make_message())
    await d.close()
    assert result.accepted
    assert fake.connections == 2 and len(fake.messages) == 2


async def test_dead_idle_connection_is_not_used(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port))
    assert (await d.deliver(make_message())).accepted
    fake.drop_all()  # the downstream restarts
    await asyncio.sleep(0.05)
    assert (await d.deliver(make_message())).accepted
    await d.close()
    assert fake.connections == 2


async def test_closed_pool_refuses_with_451(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port))
    await d.close()
    result = await d.deliver(make_message())
    assert (result.accepted, result.reply.code) == (False, 451)
