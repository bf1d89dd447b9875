"""store.url and store.fallback_nodes: where the Redis store connects, how its fallback scales."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat import config
from mailmoat.cli import main
from mailmoat.store import MemoryStore, open_store
from mailmoat.store.redis_store import RedisStore
from tests.support.ports import free_port
from tests.support.redis import available, redis_server
from tests.support.waiting import wait_for


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


@pytest.mark.skipif(not available(), reason="redis-server is not installed")
async def test_store_url_reaches_redis_over_tls(tmp_path: Path) -> None:
    with redis_server(tmp_path / "redis", tls=True) as server:
        settings = config.load(None, {"store.backend": "redis", "store.url": server.tls_url})
        a, b = open_store(settings.store), open_store(settings.store)
        try:
            assert isinstance(a, RedisStore) and isinstance(b, RedisStore)
            await a.set("pregreet:192.0.2.1", "ok", ttl=60)
            assert await b.get("pregreet:192.0.2.1") == "ok"  # b's own store never saw it
            b.watch_bans(lambda name, seconds: None)  # its feed subscribes over TLS too
            await wait_for(lambda: b.feed is not None and b.feed.synced, "b's feed")
            await a.set("ban:192.0.2.2", "1", ttl=60)
            await wait_for(lambda: b.feed is not None and b.feed.received == 1, "the ban at b")
            assert a.fallbacks == b.fallbacks == 0
            # b's connections (calls, the feed) share one SSL context: redis-py would load the
            # system's CA bundle for each, blocking the event loop every time the pool grows
            pool = b.client.connection_pool
            connections = [*pool._available_connections, *pool._in_use_connections]
            assert len(connections) >= 2
            assert len({id(c.ssl_context) for c in connections}) == 1  # type: ignore[attr-defined]
        finally:
            await a.close()
            await b.close()


@pytest.mark.skipif(not available(), reason="redis-server is not installed")
async def test_an_untrusted_redis_certificate_is_one_error_line_and_the_local_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with redis_server(tmp_path / "redis", tls=True) as server:
        store = RedisStore(server.untrusted_tls_url, MemoryStore(), fallback_nodes=1)
        try:
            for n in range(1, 5):  # refused each time: this node's count, never an error
                assert await store.hit("rate:192.0.2.1", window=60, cap=100) == n
            await wait_for(lambda: not store.breaker.closed, "the breaker open")
        finally:
            await store.close()
    lines = [r for r in caplog.records if r.msg == "store" and r.levelname == "ERROR"]
    assert len(lines) == 1, caplog.records
    fields = lines[0].__dict__["fields"]
    assert fields["action"] == "tls_failed"
    assert "certificate verify failed" in fields["error"]


def test_a_bad_tls_file_in_store_url_is_one_line_at_start(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate\n")
    for query, words in (
        (f"ssl_ca_certs={tmp_path / 'missing.pem'}", "ssl_ca_certs: "),
        (f"ssl_ca_certs={not_pem}", "no usable CA certificate"),
        (f"ssl_certfile={tmp_path / 'missing.pem'}", "ssl_certfile: "),
    ):
        f = tmp_path / "store.toml"
        f.write_text(
            f'[store]\nbackend = "redis"\nurl = "rediss://127.0.0.1:6380/0?{query}"\n'
            f'[maildir]\npath = "{tmp_path / "md"}"\n'
        )
        result = CliRunner().invoke(main, ["config", "check", str(f)])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and words in result.output, result.output
        assert result.output.startswith("config error: store.url: "), result.output
    with pytest.raises(config.ConfigError, match="cannot set up TLS"):  # and if it gets past
        RedisStore(f"rediss://127.0.0.1:6380/0?ssl_ca_certs={not_pem}", MemoryStore())
