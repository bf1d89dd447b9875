"""A bounded cache whose entries expire: at most `size` entries, the least recently used
dropped first, each kept until its own expiry time (the owner's clock). The DNS answers and
the results the checks compute from them (SPF, FCrDNS, HELO) are kept in these.

With a `weigh` function the cache is bounded in bytes too: it keeps at most `max_bytes` of
what `weigh` accounts for its entries (dropping the least recently used first), and never
keeps an entry heavier than `max_entry` (a 60 KB TXT answer is returned, not kept)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(
        self,
        size: int,
        clock: Callable[[], float],
        weigh: Callable[[V], int] | None = None,
        max_bytes: int = 0,
        max_entry: int = 0,
    ) -> None:
        self.size = size
        self.clock = clock
        self.weigh = weigh
        self.max_bytes = max_bytes
        self.max_entry = max_entry
        self.bytes = 0
        """What `weigh` accounts for the entries kept (0 without `weigh`)."""
        self._data: OrderedDict[K, tuple[V, float, int]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            self._drop(key)
            return None
        self._data.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V, expires: float) -> None:
        """Keep `value` until `expires` (not at all when that is past, or size is 0, or it
        weighs more than `max_entry` or `max_bytes`)."""
        if self.size <= 0 or expires <= self.clock():
            return
        weight = 0 if self.weigh is None else self.weigh(value)
        if self.weigh is not None and (weight > self.max_entry or weight > self.max_bytes):
            self._drop(key)  # an older, lighter answer for it would be stale
            return
        self._drop(key)
        self._data[key] = (value, expires, weight)
        self.bytes += weight
        while len(self._data) > self.size or self.bytes > self.max_bytes > 0:
            self.bytes -= self._data.popitem(last=False)[1][2]

    def _drop(self, key: K) -> None:
        entry = self._data.pop(key, None)
        if entry is not None:
            self.bytes -= entry[2]

    def clear(self) -> None:
        self._data.clear()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._data)
