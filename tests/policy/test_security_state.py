"""Security state survives a flood of fresh addresses on a small store: admission's rate keys
(one per address; one IPv6 /64 has 2**64 of them) must not evict a ban or a harvest ban."""

from __future__ import annotations

import asyncio
import inspect
import time
from pathlib import Path

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.policy.base import Client, Decision
from mailmoat.policy.harvest import R_BANNED, HarvestDetector
from mailmoat.server.gateway import Gateway
from mailmoat.smtp.replies import Reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.support.talk import Talk

FLOOD = 5000


async def test_a_flood_of_fresh_addresses_does_not_lift_bans() -> None:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "store.max_keys": 100,
            "store.max_security_keys": 100,
            "admission.max_rate": 30,
            "harvest.ban_after": 3,
            "harvest.threshold": 2,
            "harvest.tarpit_after": 1,
        },
    )
    store = MemoryStore.from_settings(settings.store)
    node = Defences(settings, Stats(), store, time.monotonic)
    harvest = HarvestDetector(settings.harvest, store)
    await node.bans.ban("2001:db8::bad", "test")
    harvester = Client("2001:db8:ff::1", 25)
    for _ in range(3):
        await harvest.unknown(harvester)
    assert await harvest.connect(harvester) is not None

    for i in range(FLOOD):  # each admitted client leaves a rate key in the store
        client = Client(f"2001:db8:0:1::{i + 1:x}", 25)
        verdict = node.admission.connect(client)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        assert verdict is None
        node.admission.disconnect(client)
    assert len(store) <= settings.store.max_keys + settings.store.max_security_keys

    # Another process's view of the same store (a worker, or this one after a restart): it
    # has no local copy of the ban, so only the store can say it.
    other = Defences(settings, Stats(), store, time.monotonic)
    verdict = other.admission.connect(Client("2001:db8::bad", 25))
    if inspect.isawaitable(verdict):
        verdict = await verdict
    answer = verdict.reply if isinstance(verdict, Decision) else verdict
    assert isinstance(answer, Reply) and "temporarily blocked" in answer.text
    decision = await HarvestDetector(settings.harvest, store).connect(harvester)
    assert decision is not None and decision.reply == R_BANNED


async def test_a_gateway_keeps_a_harvester_banned_through_a_flood(tmp_path: Path) -> None:
    """End to end over TCP: a harvester earns its ban with unknown recipients, then 1,500
    clients from fresh addresses connect (each leaves a rate key in the store, 15x the
    store's ordinary room); the harvester is still refused at connect."""
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "server.uvloop": False,
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "md"),
            "dns.checks": False,
            "directory.default": "static",
            "directory.static_file": str(users),
            "store.max_keys": 100,
            "store.max_security_keys": 100,
            "harvest.tarpit_after": 2,
            "harvest.threshold": 3,
            "harvest.ban_after": 3,
            "harvest.tarpit_delay": 0.01,
            "harvest.tarpit_max": 0.05,
        },
    )
    gw = Gateway(settings)
    await gw.start()
    port = gw.servers[0].sockets[0].getsockname()[1]
    try:
        talk = await Talk.open(port, "127.0.0.3")
        await talk.start_mail()
        for i in range(3):
            answer = await talk.command(f"RCPT TO:<guess{i}@example.test>")
            assert answer.startswith(b"550")
        await talk.close()
        again = await Talk.open(port, "127.0.0.3")
        assert again.greeting == R_BANNED.to_bytes()
        await again.close()

        async def visit(n: int) -> None:
            talk = await Talk.open(port, f"127.1.{n // 250}.{n % 250 + 1}")
            assert talk.greeting.startswith(b"220")
            await talk.close()

        for start in range(0, 1500, 25):
            await asyncio.gather(*(visit(n) for n in range(start, start + 25)))
        assert isinstance(gw.store, MemoryStore) and gw.store.evicted > 1000
        gauges = gw.stats.snapshot()["gauges"]
        assert gauges["store.keys"] <= 200 and gauges["store.evicted_bans"] == 0

        again = await Talk.open(port, "127.0.0.3")
        assert again.greeting == R_BANNED.to_bytes()
        await again.close()
    finally:
        await gw.stop(grace=1)
