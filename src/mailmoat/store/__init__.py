"""Shared counters, sliding windows, bans and small cached values.

`Store` is the one interface; `MemoryStore` serves a single node, and a Redis implementation
(several nodes acting as one service) plugs in behind the same methods. Every method is async
and atomic per key, so the Redis version can be a script per call.
"""

from mailmoat.store.base import Store
from mailmoat.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
