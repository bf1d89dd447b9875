"""Two gateway nodes sharing one real redis-server: limits and bans hold across the nodes, and
mail keeps flowing (or gets 4xx, never 5xx, never a hang) while Redis hangs or restarts.

Both gateways run in the test's event loop on their own ports, each with its own RedisStore
(and local store); clients come from distinct 127.0.0.0/8 addresses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.policy.harvest import R_BANNED
from mailmoat.policy.networks import address_key
from mailmoat.server.gateway import Gateway
from mailmoat.store.redis_store import RedisStore
from tests.support.redis import RedisServer, available, redis_server
from tests.support.talk import Talk
from tests.support.waiting import wait_for

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with redis_server(tmp_path / "redis") as srv:
        yield srv


@asynccontextmanager
async def two_nodes(
    tmp_path: Path, server: RedisServer, **overrides: Any
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    nodes: list[Gateway] = []
    try:
        for name in ("a", "b"):
            settings = config.load(
                None,
                {
                    "server.listen": ["127.0.0.1:0"],
                    "server.hostname": f"{name}.mailmoat.test",
                    "server.uvloop": False,
                    "domains.local": ["example.test"],
                    "maildir.path": str(tmp_path / f"md-{name}"),
                    "dns.checks": False,
                    "directory.default": "static",
                    "directory.static_file": str(users),
                    "store.backend": "redis",
                    "store.url": server.url,
                    **overrides,
                },
            )
            gw = Gateway(settings)
            await gw.start()
            nodes.append(gw)
        for gw in nodes:
            store = gw.store
            assert isinstance(store, RedisStore)
            await wait_for(lambda s=store: s.feed is not None and s.feed.synced, "feed ready")
        yield nodes[0], nodes[1]
    finally:
        for gw in nodes:
            await gw.stop(grace=1)


def port(gw: Gateway) -> int:
    return int(gw.servers[0].sockets[0].getsockname()[1])


async def greeting(gw: Gateway, source: str) -> bytes:
    talk = await Talk.open(port(gw), source)
    try:
        return talk.greeting
    finally:
        await talk.close()


async def heard(gw: Gateway, source: str, events: int) -> None:
    """Wait until `gw` heard of `events` connections from `source` on the other node (its
    admission decides from that, without asking Redis: see docs/several-nodes.md)."""
    store = gw.store
    assert isinstance(store, RedisStore)
    key = f"rate:{source}"
    await wait_for(lambda: store.peers.events(key, 60) >= events, f"{events} heard of {source}")


STEPS = ("EHLO client.test", "MAIL FROM:<s@sender.test>", "RCPT TO:<alice@example.test>", "DATA")


def delivered(tmp_path: Path) -> int:
    return sum(1 for _ in tmp_path.glob("md-*/**/new/*"))


async def send_one(gw: Gateway, source: str) -> list[bytes]:
    """One message to alice: every reply, for the caller to judge."""
    talk = await Talk.open(port(gw), source)
    answers = [talk.greeting]
    try:
        if not talk.greeting.startswith(b"220"):
            return answers
        for line in STEPS:
            answers.append(await talk.command(line))
            if answers[-1][:1] in (b"4", b"5"):
                return answers
        answers.append(await talk.command("Subject: t\r\n\r\nhello\r\n."))
        await talk.command("QUIT")
        return answers
    finally:
        await talk.close()


async def test_a_harvest_split_over_two_nodes_is_banned_on_both(
    tmp_path: Path, server: RedisServer
) -> None:
    harvest = {
        "harvest.tarpit_after": 3,
        "harvest.threshold": 4,
        "harvest.ban_after": 4,
        "harvest.tarpit_delay": 0.01,
        "harvest.tarpit_max": 0.05,
    }
    async with two_nodes(tmp_path, server, **harvest) as (a, b):
        for gw, guesses in ((a, ("g0", "g1")), (b, ("g2", "g3"))):
            talk = await Talk.open(port(gw), "127.0.0.3")
            await talk.start_mail()
            for guess in guesses:  # two unknown recipients per node: four in the cluster
                answer = await talk.command(f"RCPT TO:<{guess}@example.test>")
                assert answer[:1] in (b"4", b"5")
            await talk.close()
        # neither node alone saw the four guesses; the cluster did, and both refuse now
        assert await greeting(b, "127.0.0.3") == R_BANNED.to_bytes()
        assert await greeting(a, "127.0.0.3") == R_BANNED.to_bytes()
        assert (await greeting(a, "127.0.0.4")).startswith(b"220")  # nobody else


async def test_a_per_address_rate_holds_across_nodes(tmp_path: Path, server: RedisServer) -> None:
    async with two_nodes(tmp_path, server, **{"admission.max_rate": 3}) as (a, b):
        for gw in (a, b, a):
            assert (await greeting(gw, "127.0.0.5")).startswith(b"220")
        await heard(b, "127.0.0.5", 2)
        refused = await greeting(b, "127.0.0.5")  # the fourth in the minute, b's second
        assert refused.startswith(b"421") and b"too many connections" in refused
        assert (await greeting(b, "127.0.0.6")).startswith(b"220")


async def test_a_ban_on_one_node_is_pushed_to_the_other(
    tmp_path: Path, server: RedisServer
) -> None:
    # b trusts its "not banned" verdict for a minute: only the push can tell it in time
    async with two_nodes(tmp_path, server, **{"bans.cache": 60}) as (a, b):
        assert (await greeting(b, "127.0.0.7")).startswith(b"220")
        assert b.defences.bans.clear_now("127.0.0.7")
        await a.defences.bans.ban_manually("127.0.0.7", 600)
        await wait_for(lambda: b.defences.bans.banned_now("127.0.0.7"), "b knows the ban")
        assert (await greeting(b, "127.0.0.7")).startswith(b"421")
        await b.defences.bans.unban("127.0.0.7")  # lifted on b: a lets it in again
        await wait_for(lambda: not a.defences.bans.banned_now("127.0.0.7"), "a knows")
        assert (await greeting(a, "127.0.0.7")).startswith(b"220")


async def test_mail_flows_while_redis_hangs_and_after_it_restarts(
    tmp_path: Path, server: RedisServer
) -> None:
    async with two_nodes(tmp_path, server, **{"admission.max_rate": 3}) as (a, b):
        assert (await send_one(a, "127.0.0.8"))[-1].startswith(b"250")
        server.pause()  # hung: connections accepted by the kernel, nothing answers
        try:
            for gw in (a, b):
                answers = await send_one(gw, "127.0.0.9")
                assert not any(r.startswith(b"5") for r in answers), answers
                assert answers[-1].startswith((b"250", b"4")), answers
        finally:
            server.resume()
        server.shutdown()  # gone: connections refused
        for gw in (b, a):
            answers = await send_one(gw, "127.0.0.10")
            assert not any(r.startswith(b"5") for r in answers), answers
            assert answers[-1].startswith((b"250", b"4")), answers
        gauges = a.stats.snapshot()["gauges"]
        assert gauges["store.redis.fallbacks"] > 0 and gauges["store.redis.feed_synced"] == 0
        server.start()  # back, empty and without functions
        for gw in (a, b):
            store = gw.store
            assert isinstance(store, RedisStore)
            await wait_for(lambda s=store: s.breaker.closed and s.feed.synced, "recovered")
        # the limit holds cluster-wide again
        for gw in (a, b, a):
            assert (await greeting(gw, "127.0.0.11")).startswith(b"220")
        await heard(b, "127.0.0.11", 2)
        assert (await greeting(b, "127.0.0.11")).startswith(b"421")
        assert server.command("FUNCTION", "LIST") != b"*0"
        gauges = a.stats.snapshot()["gauges"]
        assert gauges["store.redis.breaker_open"] == 0 and gauges["store.redis.feed_synced"] == 1
        await wait_for(  # the heartbeats of both nodes, the next second
            lambda: a.stats.snapshot()["gauges"]["store.redis.nodes"] == 2, "two nodes counted"
        )
        await wait_for(lambda: delivered(tmp_path) >= 1 + 2 + 2, "every accepted message delivered")


async def test_connections_held_open_count_again_after_redis_restarts_empty(
    tmp_path: Path, server: RedisServer
) -> None:
    """Three connections held on a, Redis restarted with no data: once the nodes are back,
    b hears a's three again (a sends its counts when its feed resubscribes) and refuses
    the fourth, instead of letting three more in."""
    source, limit = "127.0.0.12", {"admission.max_per_ip": 3, "admission.max_rate": 0}
    key = f"slots:ip:{address_key(ip_address(source))}"
    async with two_nodes(tmp_path, server, **limit) as (a, b):
        stores = [gw.store for gw in (a, b)]
        assert isinstance(stores[0], RedisStore) and isinstance(stores[1], RedisStore)
        peers = stores[1].peers  # what b heard of a
        held = [await Talk.open(port(a), source) for _ in range(3)]
        try:
            assert all(t.greeting.startswith(b"220") for t in held)
            await wait_for(lambda: peers.open(key) == 3, "b heard a's three")
            server.shutdown()
            for s in stores:
                await wait_for(lambda s=s: not s.feed.synced, "the feeds lost")
            server.start()  # empty: the count of a's three is gone from Redis
            for s in stores:
                await wait_for(lambda s=s: s.breaker.closed and s.feed.synced, "recovered")
            await wait_for(lambda: peers.open(key) == 3, "b heard a's three again")
            refused = await greeting(b, source)
            assert refused.startswith(b"421") and b"from your address" in refused, refused
            assert (await greeting(b, "127.0.0.13")).startswith(b"220")  # nobody else
        finally:
            for t in held:
                await t.close()
