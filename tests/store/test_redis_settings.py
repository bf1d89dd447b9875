"""store.url and store.fallback_nodes: where the Redis store connects, how its fallback scales."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat import config
from mailmoat.store import open_store
from mailmoat.store.redis_store import RedisStore
from tests.support.ports import free_port
from tests.support.redis import available, redis_server


def test_store_url_must_name_redis() -> None:
    for bad in ("http://127.0.0.1:6379", "127.0.0.1:6379", "/run/redis.sock"):
        with pytest.raises(config.ConfigError, match=r"store\.url"):
            config.load(None, {"store.url": bad})


async def test_store_fallback_nodes_scales_the_local_count_while_redis_is_down() -> None:
    nobody = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    for nodes in (1, 4):
        settings = config.load(
            None,
            {"store.backend": "redis", "store.url": nobody, "store.fallback_nodes": nodes},
        )
        store = open_store(settings.store)
        try:
            assert await store.hit("rate:192.0.2.1", window=60, cap=100) == nodes
            assert await store.hit("rate:192.0.2.1", window=60, cap=100) == 2 * nodes
        finally:
            await store.close()


@pytest.mark.skipif(not available(), reason="redis-server is not installed")
async def test_store_url_reaches_redis_over_a_unix_socket(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis") as server:
        settings = config.load(None, {"store.backend": "redis", "store.url": server.unix_url})
        a, b = open_store(settings.store), open_store(settings.store)
        try:
            assert isinstance(a, RedisStore) and isinstance(b, RedisStore)
            await a.set("pregreet:192.0.2.1", "ok", ttl=60)
            assert await b.get("pregreet:192.0.2.1") == "ok"  # b's own store never saw it
            assert a.fallbacks == b.fallbacks == 0
        finally:
            await a.close()
            await b.close()
