"""Shared counters, sliding windows, bans and small cached values.

`Store` is the one interface; `MemoryStore` serves a single node, and `RedisStore`
(`store.backend = "redis"`: several nodes acting as one service) plugs in behind the same
methods. Every method is async and atomic per key, so the Redis version is one function call
per operation.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmoat.config import StoreSettings
from mailmoat.store.base import Store
from mailmoat.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store", "open_store"]


def open_store(settings: StoreSettings, clock: Callable[[], float] = time.monotonic) -> Store:
    """The store `settings` name; a Redis store connects on its first use."""
    local = MemoryStore.from_settings(settings, clock)
    if settings.backend == "memory":
        return local
    from mailmoat.store.redis_store import RedisStore

    return RedisStore(settings.url, local, settings.fallback_nodes, clock)
