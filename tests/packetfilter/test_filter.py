"""The packet filter's bookkeeping, in this process against a real `nft` working in a network
namespace of the test's own (an `nft` on $PATH that runs the real one inside it and counts
its calls): a wave of bans is one call, a network overlapping one in the kernel stays out of
it, and bans written to the store by another node (not through this node's watch) reach the
kernel, and leave it, with the periodic comparison."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat import config
from mailmoat.packetfilter import filter as filter_module
from mailmoat.packetfilter.filter import PacketFilter
from mailmoat.packetfilter.watch import WatchedStore
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.support.netns import Netns, needs_root, netns
from tests.support.waiting import wait_for

pytestmark = needs_root

TABLE = "mmunit"


@pytest.fixture
def ns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Netns]:
    real = shutil.which("nft", path="/usr/sbin:/sbin:/usr/bin:/bin")
    assert real is not None
    with netns() as made:
        bindir = tmp_path / "bin"
        bindir.mkdir()
        script = bindir / "nft"
        calls = tmp_path / "calls"
        script.write_text(
            f'#!/bin/sh\necho "$@" >> {calls}\nexec ip netns exec {made.name} {real} "$@"\n'
        )
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")
        yield made


def _calls(tmp_path: Path) -> int:
    path = tmp_path / "calls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _count(ns: Netns, name: str) -> int:
    return len(ns.elements(TABLE, name))


def _nets(ns: Netns) -> set[str]:
    out = set()
    for item in ns.elements(TABLE, "net4"):
        prefix = item["elem"]["val"]["prefix"]
        out.add(f"{prefix['addr']}/{prefix['len']}")
    return out


def _filter() -> tuple[PacketFilter, MemoryStore, WatchedStore]:
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:2525"],
            "packetfilter.backend": "nftables",
            "packetfilter.table": TABLE,
        },
    )
    pf = PacketFilter(settings, Stats())
    inner = MemoryStore.from_settings(settings.store)
    return pf, inner, WatchedStore(inner, pf)


def test_a_wave_of_bans_is_one_nft_call(tmp_path: Path, ns: Netns) -> None:
    async def main() -> None:
        pf, _, store = _filter()
        await pf.start()
        try:
            assert _calls(tmp_path) == 1  # the table
            await asyncio.gather(
                *(store.set(f"ban:10.1.{i // 250}.{i % 250}", "1", 600) for i in range(500))
            )
            await wait_for(lambda: pf.stats.get("packetfilter.added") == 500, "the wave sent")
            assert pf.stats.get("packetfilter.batches") == 1
            assert _count(ns, "addr4") == 500
            assert _calls(tmp_path) <= 2 + 1  # the wave (+ at most one comparison's batch)
        finally:
            await store.close()
        assert _calls(tmp_path) >= 3 and ns.ruleset() == []  # the table deleted at close

    asyncio.run(main())


def test_a_network_overlapping_one_in_the_kernel_stays_out_of_it(
    tmp_path: Path, ns: Netns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filter_module, "SYNC", 0.5)  # compare often

    async def main() -> None:
        pf, _, store = _filter()
        await pf.start()
        try:
            await store.set("ban:net:10.2.0.0/16", "admin", 600)
            await store.set("ban:dha:net:10.2.3.0/24", "1", 600)  # inside it
            await store.set("ban:dha:net:10.3.3.0/24", "1", 600)
            await store.set("ban:dha:ip:10.2.3.4", "1", 600)  # an address: its own set
            await wait_for(lambda: pf.stats.get("packetfilter.added") == 3, "bans sent")
            assert _nets(ns) == {"10.2.0.0/16", "10.3.3.0/24"}
            assert _count(ns, "addr4") == 1
            assert pf.stats.get("packetfilter.skipped") >= 1
            # banned and lifted at once, inside the wide one: never sent (it would conflict)
            await store.set("ban:dha:net:10.2.4.0/24", "1", 600)
            await store.delete("ban:dha:net:10.2.4.0/24")
            await store.set("ban:192.0.2.1", "1", 600)  # the next batch is a good one
            await wait_for(lambda: pf.stats.get("packetfilter.added") == 4, "the next batch")
            assert pf.stats.get("packetfilter.errors") == 0
            # lifting the wide one lets the narrow one in at the next comparison
            await store.delete("ban:net:10.2.0.0/16")
            await wait_for(
                lambda: _nets(ns) == {"10.2.3.0/24", "10.3.3.0/24"},
                "the narrow network in the kernel",
                timeout=30,
                interval=0.2,
            )
        finally:
            await store.close()

    asyncio.run(main())


def test_bans_written_by_another_node_reach_the_kernel_and_leave_it(
    tmp_path: Path, ns: Netns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filter_module, "SYNC", 0.5)  # compare often

    async def main() -> None:
        pf, inner, store = _filter()
        await inner.set("ban:10.4.0.1", "1", 600)  # before the start: filled from the store
        await pf.start()
        try:
            assert _count(ns, "addr4") == 1
            await inner.set("ban:2001:db8::7", "1", 600)  # another node, the shared store
            await wait_for(lambda: _count(ns, "addr6") == 1, timeout=30, interval=0.2)
            await inner.delete("ban:10.4.0.1")  # lifted on another node
            await wait_for(lambda: _count(ns, "addr4") == 0, timeout=30, interval=0.2)
        finally:
            await store.close()

    asyncio.run(main())


def test_bans_pushed_by_a_shared_store_reach_the_kernel_at_once(tmp_path: Path, ns: Netns) -> None:
    """What the Redis store's ban feed pushes (`watch_bans`) goes to the kernel without
    waiting for the comparison (SYNC left at its 5 s: none runs within this test's waits)."""

    async def main() -> None:
        pf, _, store = _filter()
        await pf.start()
        try:
            store.learn("10.5.0.1", 600)
            store.learn("net:10.6.0.0/16", 600)
            store.learn("dha:ip:2001:db8::9", 600)
            store.learn("not an address", 600)  # bad input from Redis: ignored
            await wait_for(lambda: pf.stats.get("packetfilter.added") == 3, "the bans sent")
            assert _count(ns, "addr4") == 1 and _nets(ns) == {"10.6.0.0/16"}
            assert _count(ns, "addr6") == 1
            assert pf.stats.get("packetfilter.pushed") == 3
            store.learn("10.5.0.1", None)  # lifted on another node
            await wait_for(lambda: pf.stats.get("packetfilter.lifted") == 1, "the lift sent")
            assert _count(ns, "addr4") == 0
        finally:
            await store.close()

    asyncio.run(main())
