"""The other nodes' open connections per key, bounded, and never under-counted for room.

At most `max_keys` keys (addresses and networks) are held, each with its count per node; a
zero removes a node's count, and a key with none left. The table fills only when the other
nodes together have more than `max_keys` addresses and networks with open connections: then
the key dropped for a new one is one with the fewest connections (of those, the one updated
least lately), never one chosen by age, so churn (connections that end) cannot push out an
address that holds many, and holding one costs the attacker as many connections per key.

What a dropped key held is not forgotten: its largest count of one node raises a floor of
its kind (`slots:ip`, `slots:net`). Until the nodes have sent their counts again (every
`SLOTS_REFRESH`, store/own_counts), which the floor outlives (`PEER_FLOOR_HOLD`), a key not
held counts the floor for each other node, and a key held again since a drop (its count of
some node may be the one lost) counts the floor for each other node it has no count of. A
node's count that changed was sent, so what is unknown is what was dropped. So past the
bound the answer errs high, never low: by at most (nodes - 1) x the smallest count held when
the table was full, for an address this node knows nothing of; a key held throughout is
exact.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from mailmoat.limits import PEER_FLOOR_HOLD


class PeerOpen:
    def __init__(self, max_keys: int, clock: Callable[[], float]) -> None:
        self.max_keys = max_keys
        self.clock = clock
        self.dropped = 0  # keys with open connections dropped for room
        self._open: dict[str, dict[str, int]] = {}  # key -> other node -> open connections
        self._levels: dict[int, dict[str, None]] = {}  # total -> keys, least lately updated first
        self._floors: tuple[dict[str, int], dict[str, int]] = ({}, {})  # this period, the last
        self._since = clock()
        self._partial: set[str] = set()  # keys held again while a floor lasts
        self._others: set[str] = set()  # the other nodes, as heard

    def __len__(self) -> int:
        return len(self._open)

    def open(self, key: str) -> int:
        nodes = self._open.get(key)
        n = sum(nodes.values()) if nodes else 0
        floor = self._floor(key) if self._floors[0] or self._floors[1] else 0
        if not floor:
            return n
        if nodes is None:
            return floor * len(self._others)
        if key in self._partial:
            n += floor * len(self._others.difference(nodes))
        return n

    def connections(self) -> int:
        return sum(total * len(keys) for total, keys in self._levels.items())

    def set(self, key: str, node: str, n: int) -> None:
        """`node`'s absolute count for `key` (0: none)."""
        nodes = self._open.get(key)
        if nodes is None:
            if n <= 0:
                return
            if len(self._open) >= self.max_keys:
                self._drop()
            nodes = self._open[key] = {}
            if self._floor(key):
                self._partial.add(key)
        else:
            self._unlevel(key, sum(nodes.values()))
        if n > 0:
            nodes[node] = n
            self._others.add(node)
        else:
            nodes.pop(node, None)
        self._level(key, nodes)

    def forget(self, key: str) -> None:
        nodes = self._open.pop(key, None)
        if nodes:
            self._unlevel(key, sum(nodes.values()))
            self._partial.discard(key)

    def keep_nodes(self, live: Collection[str]) -> None:
        keep = set(live)
        self._others &= keep
        for key in list(self._open):
            nodes = self._open[key]
            gone = [n for n in nodes if n not in keep]
            if gone:
                self._unlevel(key, sum(nodes.values()))
                for name in gone:
                    del nodes[name]
                self._level(key, nodes)

    def clear(self) -> None:
        self._open.clear()
        self._levels.clear()
        self._floors = ({}, {})
        self._partial.clear()
        self._others.clear()

    # ---------------------------------------------------------------- mechanics
    def _level(self, key: str, nodes: dict[str, int]) -> None:
        total = sum(nodes.values())
        if total > 0:
            self._levels.setdefault(total, {})[key] = None  # the most lately updated last
        else:
            del self._open[key]
            self._partial.discard(key)

    def _unlevel(self, key: str, total: int) -> None:
        keys = self._levels[total]
        del keys[key]
        if not keys:
            del self._levels[total]

    def _drop(self) -> None:
        """Room for one key: drop one with the fewest connections, raising its kind's floor."""
        total = min(self._levels)
        key = next(iter(self._levels[total]))
        self._unlevel(key, total)
        part = max(self._open.pop(key).values())
        self._partial.discard(key)
        self._age_floors()
        floors, kind = self._floors[0], _kind(key)
        floors[kind] = max(floors.get(kind, 0), part)
        self.dropped += 1

    def _floor(self, key: str) -> int:
        self._age_floors()
        kind = _kind(key)
        return max(self._floors[0].get(kind, 0), self._floors[1].get(kind, 0))

    def _age_floors(self) -> None:
        """A floor lasts from one to two PEER_FLOOR_HOLD periods after the last drop."""
        now = self.clock()
        if now - self._since < PEER_FLOOR_HOLD:
            return
        last = self._floors[0] if now - self._since < 2 * PEER_FLOOR_HOLD else {}
        self._floors, self._since = ({}, last), now
        if not last:
            self._partial.clear()  # every node sent its counts since the last drop


def _kind(key: str) -> str:
    return key.rpartition(":")[0]
