"""The single-node store: dictionaries with expiry, bounded in the number of keys.

When `max_keys` is reached the least recently used key is evicted, so no sequence of clients
can make it grow without bound (invariant 3). Expired keys are dropped lazily on access and by a
sweep of a few keys on every write.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class _Entry:
    value: int | str | deque[float]
    expires: float


class MemoryStore:
    def __init__(
        self, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    # -- helpers
    def _live(self, key: str, now: float) -> _Entry | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry

    def _put(self, key: str, entry: _Entry, now: float) -> None:
        self._data[key] = entry
        self._data.move_to_end(key)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        data = self._data
        for _ in range(2):  # look at the two oldest keys; drop them if expired
            if not data:
                return
            oldest = next(iter(data))
            if data[oldest].expires > now:
                break
            del data[oldest]
        while len(data) > self.max_keys:
            data.popitem(last=False)

    # -- Store
    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        now = self.clock()
        entry = self._live(key, now)
        if entry is None or not isinstance(entry.value, int):
            self._put(key, _Entry(amount, now + ttl), now)
            return amount
        entry.value += amount
        return entry.value

    async def hit(self, key: str, window: float, cap: int) -> int:
        now = self.clock()
        entry = self._live(key, now)
        if entry is None or not isinstance(entry.value, deque):
            events: deque[float] = deque(maxlen=max(cap, 1))
            events.append(now)
            self._put(key, _Entry(events, now + window), now)
            return 1
        events = entry.value
        while events and events[0] <= now - window:
            events.popleft()
        events.append(now)
        entry.expires = now + window
        return len(events)

    async def count(self, key: str, window: float) -> int:
        now = self.clock()
        entry = self._live(key, now)
        if entry is None or not isinstance(entry.value, deque):
            return 0
        return sum(1 for t in entry.value if t > now - window)

    async def get(self, key: str) -> str | None:
        entry = self._live(key, self.clock())
        if entry is None:
            return None
        return str(entry.value) if not isinstance(entry.value, deque) else None

    async def set(self, key: str, value: str, ttl: float) -> None:
        now = self.clock()
        self._put(key, _Entry(value, now + ttl), now)

    async def ttl(self, key: str) -> float | None:
        now = self.clock()
        entry = self._live(key, now)
        return None if entry is None else entry.expires - now

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def close(self) -> None:
        self._data.clear()
