"""The single-node store: dictionaries with expiry, bounded in the number of keys.

Keys live in two regions, each with its own bound, so that no sequence of clients can make the
store grow without bound (invariant 3) and none can buy a banned client its freedom:

- ordinary keys (connection rates, pregreet verdicts, DNS and directory caches): at most
  `max_keys`, the least recently used evicted first. A flood of fresh addresses (one IPv6 /64
  holds plenty) churns only these.
- security state (`SECURITY_PREFIXES`: bans, ban counters, strike windows, harvest scores): at
  most `max_security_keys`, evicted only by other security state. When that region is full the
  least recently used strike window, ban counter or harvest score goes first; only when nothing
  but running bans is left does the ban that ends soonest go (a new ban shorter than all the
  others is the one dropped). Bans are earned by hitting hard limits, so filling the region
  with them costs an attacker far more than the bans it pushes out are worth; the local copy
  each node keeps of the bans it saw (`policy.bans`) holds them meanwhile.

Expired keys are dropped lazily on access and by a sweep of a few keys on every write.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass

from mailmoat.config import StoreSettings, default_of
from mailmoat.store.base import BAN_PREFIX, is_security_key


@dataclass(slots=True)
class _Entry:
    value: int | str | deque[float]
    expires: float


class MemoryStore:
    def __init__(
        self,
        max_keys: int = default_of(StoreSettings, "max_keys"),
        clock: Callable[[], float] = time.monotonic,
        max_security_keys: int = default_of(StoreSettings, "max_security_keys"),
    ) -> None:
        self.max_keys = max_keys
        self.max_security_keys = max_security_keys
        self.clock = clock
        self._data: OrderedDict[str, _Entry] = OrderedDict()  # ordinary keys, LRU order
        self._marks: OrderedDict[str, _Entry] = OrderedDict()  # strikes, counters, scores
        self._bans: dict[str, _Entry] = {}
        self._ban_ends: list[tuple[float, str]] = []  # heap; stale pairs are skipped
        self.evicted = 0  # ordinary keys evicted while live
        self.evicted_security = 0  # strike windows, counters and scores evicted while live
        self.evicted_bans = 0  # running bans evicted (the security region held only bans)

    @classmethod
    def from_settings(
        cls, settings: StoreSettings, clock: Callable[[], float] = time.monotonic
    ) -> MemoryStore:
        return cls(settings.max_keys, clock, settings.max_security_keys)

    def __len__(self) -> int:
        return len(self._data) + len(self._marks) + len(self._bans)

    # -- helpers
    def _table(self, key: str) -> dict[str, _Entry]:
        if not is_security_key(key):
            return self._data
        return self._bans if key.startswith(BAN_PREFIX) else self._marks

    def _live(self, key: str, now: float) -> _Entry | None:
        table = self._table(key)
        entry = table.get(key)
        if entry is None:
            return None
        if entry.expires <= now:
            del table[key]
            return None
        if isinstance(table, OrderedDict):
            table.move_to_end(key)
        return entry

    def _put(self, key: str, entry: _Entry, now: float) -> None:
        table = self._table(key)
        table[key] = entry
        if isinstance(table, OrderedDict):
            table.move_to_end(key)
        else:
            heapq.heappush(self._ban_ends, (entry.expires, key))
            if len(self._ban_ends) > 2 * len(self._bans) + 64:  # drop the stale pairs
                self._ban_ends = [(e.expires, k) for k, e in self._bans.items()]
                heapq.heapify(self._ban_ends)
        self._sweep(now)

    def _sweep(self, now: float) -> None:
        for lru in (self._data, self._marks):
            for _ in range(2):  # look at the two oldest keys; drop them if expired
                if not lru:
                    break
                oldest = next(iter(lru))
                if lru[oldest].expires > now:
                    break
                del lru[oldest]
        ends = self._ban_ends
        while ends and ends[0][0] <= now:
            _, key = heapq.heappop(ends)
            entry = self._bans.get(key)
            if entry is not None and entry.expires <= now:
                del self._bans[key]
        while len(self._data) > self.max_keys:
            self._data.popitem(last=False)
            self.evicted += 1
        while len(self._marks) + len(self._bans) > self.max_security_keys:
            if self._marks:
                self._marks.popitem(last=False)
                self.evicted_security += 1
            else:
                self._evict_soonest_ban()

    def _evict_soonest_ban(self) -> None:
        ends = self._ban_ends
        while ends:
            expires, key = heapq.heappop(ends)
            entry = self._bans.get(key)
            if entry is not None and entry.expires == expires:
                del self._bans[key]
                self.evicted_bans += 1
                return
        # unreachable while every ban has its pair in the heap; never loop forever
        self._bans.pop(next(iter(self._bans)))
        self.evicted_bans += 1

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
        return self.hit_now(key, window, cap)

    async def count(self, key: str, window: float) -> int:
        return self.count_now(key, window)

    def hit_now(self, key: str, window: float, cap: int) -> int:
        """`hit`, synchronously (this store never waits)."""
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

    def count_now(self, key: str, window: float) -> int:
        """`count`, synchronously."""
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
        self._table(key).pop(key, None)

    async def bans(self, limit: int) -> list[tuple[str, float]]:
        now = self.clock()
        live = [(k, e.expires - now) for k, e in self._bans.items() if e.expires > now]
        live.sort(key=lambda item: -item[1])
        return live[:limit]

    async def close(self) -> None:
        self._data.clear()
        self._marks.clear()
        self._bans.clear()
        self._ban_ends.clear()
