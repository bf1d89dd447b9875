"""Several nodes on the Redis store, against the real kernel: two `mailmoat serve` nodes and a
private redis-server, all inside one network namespace of the test's own, each node with its
own nftables table. A ban made through node A's admin endpoint reaches node B's kernel set
(pushed over the ban feed, not left to the periodic comparison), B's port then drops the
banned address's connections, and an unban through A takes it out of B's set again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import redis
from tests.support.netns import Netns, needs_root, netns
from tests.support.netns_gateway import Served, addresses, served
from tests.support.waiting import wait_until

pytestmark = [
    needs_root,
    pytest.mark.skipif(not redis.available(), reason="needs redis-server (Debian redis-server)"),
]

NODES = {"a": (2525, "mmnodea"), "b": (2526, "mmnodeb")}
BANNED = "127.0.0.21"


@pytest.fixture
def ns() -> Iterator[Netns]:
    with netns() as made:
        yield made


def _node(tmp_path: Path, ns: Netns, name: str, url: str) -> Iterator[Served]:
    port, table = NODES[name]
    home = tmp_path / name
    home.mkdir()
    settings = {"store.backend": "redis", "store.url": url}
    return served(home, ns, port=port, table=table, **settings)  # type: ignore[arg-type]


def test_a_ban_on_one_node_reaches_the_other_nodes_kernel(tmp_path: Path, ns: Netns) -> None:
    _, table_b = NODES["b"]
    with (
        redis.redis_server(tmp_path / "redis", ns) as server,
        _node(tmp_path, ns, "a", server.url) as node_a,
        _node(tmp_path, ns, "b", server.url) as node_b,
    ):
        assert node_b.greeting(BANNED).startswith(b"220 ")
        wait_until(lambda: node_b.gauges().get("store.redis.feed_synced") == 1, "B's ban feed")
        node_a.ban(BANNED, 600)
        made = time.monotonic()
        wait_until(lambda: addresses(ns, "addr4", table_b) == {BANNED}, "the ban in B's kernel set")
        print(f"\nban on A -> B's kernel set: {time.monotonic() - made:.3f} s")
        assert node_b.counters().get("packetfilter.pushed") == 1  # not the 5 s comparison
        assert node_b.dropped(BANNED)  # B's own table drops it: no accept, no 421
        assert node_b.greeting("127.0.0.22").startswith(b"220 ")  # others are not touched
        node_a.unban(BANNED)
        lifted = time.monotonic()
        wait_until(lambda: not addresses(ns, "addr4", table_b), "the ban out of B's kernel set")
        print(f"unban on A -> out of B's kernel set: {time.monotonic() - lifted:.3f} s")
        assert node_b.counters()["packetfilter.pushed"] >= 2  # the lift came pushed too
        assert node_b.greeting(BANNED).startswith(b"220 ")
