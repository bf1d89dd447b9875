"""What a session needs from the process that runs it, and nothing more (issue 12).

A session depends on this interface, not on the gateway: the one-process gateway, a worker
and the supervisor's own sessions all provide it. It has two parts:

- `HostState`, a frozen snapshot of what a reload may change (the settings, the checks, the
  delivery, the TLS context). A session takes the host's current one when it starts and keeps
  it to its end: a reload (SIGHUP) gives new sessions a new snapshot, while sessions in flight
  finish under the one they started with.
- `Host`, the live parts a reload does not replace: the event loop, the counters, stress
  mode, the set of open sessions, the spool budget and the pace of deadline closes.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from mailmoat.config import Settings
from mailmoat.message import Spool
from mailmoat.policy.base import Pipeline
from mailmoat.policy.stress import Stress
from mailmoat.relay.base import Delivery
from mailmoat.stats import Stats


@dataclass(frozen=True, slots=True, eq=False)
class HostState:
    """The settings and what is built from them, as one session sees them from start to end."""

    settings: Settings
    pipeline: Pipeline
    delivery: Delivery
    tls_context: ssl.SSLContext | None


class Host(Protocol):
    """The process a session runs in."""

    state: HostState
    loop: asyncio.AbstractEventLoop
    stats: Stats
    stress: Stress
    sessions: set[Any]

    def new_spool(self, settings: Settings | None = None) -> Spool:
        """A spool for one DATA transaction, from this process's budget."""
        ...

    def close_slot(self, now: float) -> float:
        """When a session that missed its deadline at `now` may be closed."""
        ...

    def may_close(self) -> bool:
        """Whether a deadline close may happen in this turn of the event loop (counted)."""
        ...

    def spawn(self, work: Awaitable[Any]) -> None:
        """Run `work` in the background."""
        ...
