"""Every counter mailmoat keeps, in one place, readable while it runs.

Counters only ever grow; their names come from a fixed vocabulary, so the table stays small
(invariant 3) whatever clients do:

- ``connections.accepted``: every client connection accepted (refused ones included; behind
  a trusted proxy, once its PROXY header named the client)
- ``proxy.bad_header``: connections from a trusted proxy closed for want of a valid PROXY
  header (malformed, missing, too slow); ``proxy.local``: the proxy's own LOCAL connections
  (health checks), answered but not counted as clients; ``proxy.overflow``: closed because
  too many headers were being read at once
- ``connections.left_after_greeting``: admitted connections whose client closed after the
  220, before sending anything, while the supervisor held them (server/hold.py): no session
- ``refused.<reason>``: connections refused at accept time (``denied``, ``not_allowed``,
  ``max_connections``, ``max_per_ip``, ``max_per_network``, ``rate``, ``banned``, ``pregreet``)
- ``rejected.<reason>``: error replies, by the engine's reason token or ``policy`` for a check's
- ``closed.<reason>``: sessions closed by mailmoat (``timeout``, ``min_data_rate``,
  ``session_time``, ``too_many_errors``, ...), by the client (``quit``, ``eof``) or on shutdown
- ``bans``, ``strikes``, ``tarpit.delayed``, ``tarpit.suspect``, ``stress.started``,
  ``stress.stopped``, ``pregreet.passed``, ``pregreet.failed``

- ``messages.accepted`` (the client heard 250 at the end of data), ``messages.deferred``
  (4xx), ``messages.refused`` (5xx, by a check or the downstream), ``messages.bytes`` (the
  size of the accepted ones); the delivery's own outcome, apart from the checks' refusals:
  ``messages.delivered`` (stored in the Maildir or taken by the downstream: by invariant 1,
  every accepted message), ``delivery.deferred`` and ``delivery.refused`` (the downstream or
  the Maildir failed, for now or for good)
- ``dns.cache_hits`` and ``dns.queries``: DNS answers found in the resolver's cache, and
  questions sent to a name server (server/figures.py)

Gauges are read when a snapshot is taken (``connections.active``, ``connections.held``,
``connections.hold_engaged``: 1 while a greet-and-leave flood makes the supervisor hold,
``connections.peak``, ``stress.active``, the downstream pool's ``downstream.pool_size``,
``pool_open``, ``pool_busy``, ``pool_idle`` and ``pool_waiting``, ...). Histograms count how
long each stage took, in fixed buckets (``latency.command``: a command's reply,
``latency.message``: the end of data's reply, checks and delivery included). `GET /metrics`
renders the same snapshot.

``recent`` holds the last CONSOLE_RECENT_TRANSACTIONS transaction summaries (when, client,
sender, recipients, size, result), newest last, and ``offenders`` the refusals per client
address (at most CONSOLE_OFFENDERS addresses), for the web console.
"""

from __future__ import annotations

import os
import resource
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

from mailmoat.limits import (
    CONSOLE_FIELD_CHARS,
    CONSOLE_OFFENDERS,
    CONSOLE_RECENT_TRANSACTIONS,
    CONSOLE_RECIPIENTS_SHOWN,
    CONSOLE_TOP_OFFENDERS,
)
from mailmoat.limits import LATENCY_BUCKETS as BUCKETS


class Histogram:
    """Counts per bucket (not cumulative), the sum and the count: fixed size (invariant 3)."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds

    def snapshot(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": round(self.total, 6)}


def merge_histograms(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Add the snapshot histograms of `part` into `into` (a supervisor sums its workers')."""
    for name, h in part.items():
        mine = into.setdefault(name, {"counts": [0] * len(h["counts"]), "sum": 0.0})
        mine["counts"] = [a + b for a, b in zip(mine["counts"], h["counts"], strict=True)]
        mine["sum"] = round(mine["sum"] + h["sum"], 6)


def merge_console(into: dict[str, Any], part: dict[str, Any]) -> None:
    """Add the console's parts of `part` (recent transactions, offenders) into `into`."""
    into["recent"] = into.get("recent", []) + part.get("recent", [])
    offenders = into.setdefault("offenders", {})
    for address, count in part.get("offenders", {}).items():
        offenders[address] = offenders.get(address, 0) + count


class Stats:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._gauges: dict[str, Callable[[], float | int]] = {}
        self._counted: dict[str, Callable[[], int]] = {}
        self.histograms: dict[str, Histogram] = {}
        self.started = time.time()
        self.recent: deque[dict[str, Any]] = deque(maxlen=CONSOLE_RECENT_TRANSACTIONS)
        self.offenders: dict[str, int] = {}

    def transaction(
        self, client: str, sender: str | None, recipients: list[str], size: int | None, result: str
    ) -> None:
        """Keep a summary of a finished transaction, each field cut short (a worker's snapshot
        carries them over the link, whose messages are bounded)."""
        cut = CONSOLE_FIELD_CHARS
        shown = [r[:cut] for r in recipients[:CONSOLE_RECIPIENTS_SHOWN]]
        if len(recipients) > CONSOLE_RECIPIENTS_SHOWN:
            shown.append(f"+{len(recipients) - CONSOLE_RECIPIENTS_SHOWN} more")
        self.recent.append(
            {
                "when": round(time.time()),
                "client": client[:cut],
                "sender": None if sender is None else sender[:cut],
                "recipients": shown,
                "size": size,
                "result": result[:cut],
            }
        )

    def offender(self, address: str) -> None:
        """`address` was refused (at connect or a command)."""
        known = self.offenders
        if address not in known and len(known) >= CONSOLE_OFFENDERS:
            top = sorted(known.items(), key=lambda kv: -kv[1])[: CONSOLE_OFFENDERS // 2]
            known.clear()
            known.update(top)
        known[address] = known.get(address, 0) + 1

    def histogram(self, name: str) -> Histogram:
        found = self.histograms.get(name)
        if found is None:
            found = self.histograms[name] = Histogram()
        return found

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def gauge(self, name: str, read: Callable[[], float | int]) -> None:
        """Register a value that is read at snapshot time."""
        self._gauges[name] = read

    def counted(self, name: str, read: Callable[[], int]) -> None:
        """Register a counter kept elsewhere (it only grows), read at snapshot time."""
        self._counted[name] = read

    def snapshot(self) -> dict[str, Any]:
        counters = dict(self.counters)
        for name, read in self._counted.items():
            counters[name] = counters.get(name, 0) + read()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "rss_kib": _rss_kib(),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "gauges": {name: read() for name, read in sorted(self._gauges.items())},
            "counters": dict(sorted(counters.items())),
            "histograms": {n: h.snapshot() for n, h in sorted(self.histograms.items())},
            "recent": list(self.recent),
            "offenders": dict(
                sorted(self.offenders.items(), key=lambda kv: -kv[1])[: 2 * CONSOLE_TOP_OFFENDERS]
            ),
        }


def _rss_kib() -> int:
    """Resident set size now (Linux /proc), or the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
