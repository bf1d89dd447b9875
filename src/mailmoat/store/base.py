"""The store interface that defences use for state that outlives a session."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

SECURITY_PREFIXES = ("ban:", "bans:", "strikes:", "dha:", "ca:")
"""Keys of the security state: bans (`ban:<addr>`, `ban:dha:...`), their escalation counters
(`bans:`), strike windows (`strikes:`), harvest scores (`dha:`) and the call-ahead probe
windows that bound what reaches the internal server (`ca:`). A store keeps them apart from
ordinary keys (connection rates, caches), so that no flood of those can evict them."""

BAN_PREFIX = "ban:"
"""A running ban: the last security state a full store gives up."""


def is_security_key(key: str) -> bool:
    return key.startswith(SECURITY_PREFIXES)


class Store(Protocol):
    """Atomic, expiring state. Keys are short strings such as "rate:ip:192.0.2.1"."""

    async def incr(self, key: str, ttl: float, amount: int = 1) -> int:
        """Add `amount` to a counter and return the new value. A counter that did not exist
        starts at 0 and expires `ttl` seconds after that first increment (a fixed window)."""
        ...

    async def hit(self, key: str, window: float, cap: int) -> int:
        """Record one event now in a sliding window of `window` seconds and return how many
        events the window holds, this one included. At most `cap` events are kept per key,
        so the answer saturates at `cap`: callers compare it with limits no larger than that."""
        ...

    async def count(self, key: str, window: float) -> int:
        """Events in the sliding window of `key`, without recording one."""
        ...

    async def get(self, key: str) -> str | None: ...

    async def set(self, key: str, value: str, ttl: float) -> None: ...

    async def ttl(self, key: str) -> float | None:
        """Seconds until `key` expires, or None when it does not exist."""
        ...

    async def delete(self, key: str) -> None: ...

    async def bans(self, limit: int) -> list[tuple[str, float]]:
        """Up to `limit` running bans (`ban:` keys) with their seconds left, longest first."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class SharedSlots(Protocol):
    """A store shared by several nodes that also counts open connections cluster-wide, and
    answers admission's questions at once, from this node's counts and the others' as last
    heard (`slots_now`, `hit_now`: the accept path never waits on the shared store)."""

    async def slots(self, key: str, own: int) -> int:
        """Set this node's count of open connections for `key` to `own`; return the
        cluster's (never below `own`)."""
        ...

    def report_slots(self, key: str, own: int) -> None:
        """`slots` without waiting for the answer."""
        ...

    def slots_now(self, key: str, own: int) -> int:
        """The cluster's open connections for `key` as known now, `own` being this node's
        (reported later, as `report_slots`)."""
        ...

    def hit_now(self, key: str, window: float, cap: int) -> int:
        """`Store.hit` answered at once from this node's events and the others' as known now
        (the event is sent later)."""
        ...
