"""What the other nodes counted for admission, as this node last heard it.

Admission decides at accept without waiting on Redis: its caps on open connections and its
connection rate compare this node's own count, which is exact, plus the other nodes' counts,
which arrive over pub/sub (`COUNTS_CHANNEL`: every `mm_slots` and every batch of `mm_hit`
events is published by the function that writes it). So the others' part is late by at most
the reporting delay of the node that counted it (`SLOTS_REPORT_DELAY`) plus one Redis round
trip and the message's delivery: that is the overshoot a client spread over several nodes can
get, documented in docs/several-nodes.md.

Held here, bounded: per key and node the open connections (`PEER_COUNTS_MAX` keys; past it
the answer errs high, never low: store/peer_open; a node seen gone by the heartbeats is
dropped), and the others' events as
sliding windows in a `MemoryStore` of the same bound (they expire with their window, as in
Redis). When the feed (re)subscribes it reads the open connections Redis holds (`load`), so
none is missed; events are not read back (Redis does not know which node counted which): a
node that starts, or whose feed reconnects, does not know the others' earlier events of the
window.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection

from mailmoat.limits import PEER_COUNTS_MAX, PEER_EVENTS_MAX
from mailmoat.store.memory import MemoryStore
from mailmoat.store.peer_open import PeerOpen
from mailmoat.store.redis_functions import PREFIX


class PeerCounts:
    def __init__(
        self,
        node: str,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = PEER_COUNTS_MAX,
    ) -> None:
        self.node = node
        self._open = PeerOpen(max_keys, clock)  # key -> other node -> open connections
        self._events = MemoryStore(PEER_COUNTS_MAX, clock, max_security_keys=1)
        self.received = 0  # messages applied (the stats show it: is the feed alive?)
        self.events_heard = 0  # other nodes' events those messages carried

    def open(self, key: str) -> int:
        """The other nodes' open connections for `key` (or more: see store/peer_open)."""
        return self._open.open(key)

    def events(self, key: str, window: float) -> int:
        """The other nodes' events of `key` within the last `window` seconds."""
        return self._events.count_now(key, window)

    @property
    def dropped(self) -> int:
        """Keys of open connections dropped for room (a gauge: past PEER_COUNTS_MAX)."""
        return self._open.dropped

    def connections(self) -> int:
        """Every open connection the other nodes reported (a gauge)."""
        return self._open.connections()

    # ----------------------------------------------------------------- learning
    def apply(self, data: bytes | str) -> None:
        """One published count (see `COUNTS_CHANNEL`); anything malformed is ignored."""
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        parts = text.split("\t")
        if len(parts) < 4 or not parts[1].startswith(PREFIX) or parts[2] == self.node:
            return
        kind, key, node, n = parts[0], parts[1][len(PREFIX) :], parts[2], _int(parts[3])
        if n is None:
            return
        if kind == "slots" and len(parts) == 4:
            self._open.set(key, node, n)
        elif kind == "hit" and len(parts) == 5 and (ms := _int(parts[4])) and n > 0:
            n = min(n, PEER_EVENTS_MAX)
            self._add_events(key, ms / 1000, n)
            self.events_heard += n
        else:
            return
        self.received += 1

    def load(self, key: str, fields: dict[bytes, bytes]) -> None:
        """The open connections Redis holds for `key` (`mm_slots`' hash: node -> "count time")."""
        self._open.forget(key)
        for name, value in fields.items():
            node = name.decode("utf-8", "replace")
            n = _int(value.decode("ascii", "replace").partition(" ")[0])
            if n is not None and node != self.node:
                self._open.set(key, node, n)

    def keep_nodes(self, live: Collection[str]) -> None:
        """Forget the open connections of nodes no longer alive (their heartbeats stopped)."""
        self._open.keep_nodes(live)

    def clear(self) -> None:
        """Forget everything (the feed was lost: messages may be missing)."""
        self._open.clear()
        self._events = MemoryStore(PEER_COUNTS_MAX, self._events.clock, max_security_keys=1)

    # ---------------------------------------------------------------- mechanics
    def _add_events(self, key: str, window: float, n: int) -> None:
        for _ in range(n):
            self._events.hit_now(key, window, PEER_EVENTS_MAX)


def _int(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) < 10 else None
