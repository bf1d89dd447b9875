"""This node's own counts of open connections, kept to send again.

A node reports its absolute count for a key (`mm_slots`) when that count changes. What Redis
and the other nodes hold of it can still be lost while the connections stay open: a Redis
restarted without persistence, a `FLUSHALL`, an expired key, a message a node missed. So
the node sends every non-zero count again when its feed (re)subscribes (all of them: Redis
may just have come back empty), and with its heartbeats the counts not sent for
`SLOTS_REFRESH` seconds, at most `SLOTS_REFRESH_MAX` per heartbeat, the oldest first: after
any such loss the cluster counts those connections again within about `SLOTS_REFRESH`.

Held: one entry per key with open connections on this node (at most two per open connection,
its address and its network: admission's `max_connections` bounds it); a zero removes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmoat.limits import SLOTS_REFRESH


class OwnCounts:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # key -> (count, sent at), oldest first

    def __len__(self) -> int:
        return len(self._counts)

    def sent(self, key: str, n: int) -> None:
        """`n` is on its way to Redis now (a zero: nothing left to send again)."""
        self._counts.pop(key, None)
        if n > 0:
            self._counts[key] = (n, self.clock())

    def unsent(self, key: str, n: int) -> None:
        """`n` is the count now but could not be queued (too many reports waiting): due once
        the keys sent before it are (a new key waits behind them, SLOTS_REFRESH at most)."""
        if n <= 0:
            self._counts.pop(key, None)
        else:
            self._counts[key] = (n, self._counts.get(key, (0, 0.0))[1])

    def due(self, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` counts not sent within SLOTS_REFRESH, the oldest first."""
        cutoff = self.clock() - SLOTS_REFRESH
        out: list[tuple[str, int]] = []
        for key, (n, at) in self._counts.items():
            if len(out) >= limit or at > cutoff:
                break  # the rest were sent later (or wait behind them: see `unsent`)
            out.append((key, n))
        return out

    def all(self) -> list[tuple[str, int]]:
        return [(key, n) for key, (n, _) in self._counts.items()]
