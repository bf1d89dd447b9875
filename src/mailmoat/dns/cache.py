"""A bounded cache whose entries expire: at most `size` entries, the least recently used
dropped first, each kept until its own expiry time (the owner's clock). The DNS answers and
the results the checks compute from them (SPF, FCrDNS, HELO) are kept in these."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self.size = size
        self.clock = clock
        self._data: OrderedDict[K, tuple[V, float]] = OrderedDict()

    def get(self, key: K) -> V | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[1] <= self.clock():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return entry[0]

    def put(self, key: K, value: V, expires: float) -> None:
        """Keep `value` until `expires` (not at all when that is past, or size is 0)."""
        if self.size <= 0 or expires <= self.clock():
            return
        self._data[key] = (value, expires)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
