"""Every counter mailmoat keeps, in one place, readable while it runs.

Counters only ever grow; their names come from a fixed vocabulary, so the table stays small
(invariant 3) whatever clients do:

- ``connections.accepted``: every TCP connection accepted (refused ones included)
- ``refused.<reason>``: connections refused at accept time (``denied``, ``not_allowed``,
  ``max_connections``, ``max_per_ip``, ``max_per_network``, ``rate``, ``banned``, ``pregreet``)
- ``rejected.<reason>``: error replies, by the engine's reason token or ``policy`` for a check's
- ``closed.<reason>``: sessions closed by mailmoat (``timeout``, ``min_data_rate``,
  ``session_time``, ``too_many_errors``, ...), by the client (``quit``, ``eof``) or on shutdown
- ``bans``, ``strikes``, ``tarpit.delayed``, ``tarpit.suspect``, ``stress.started``,
  ``stress.stopped``, ``pregreet.passed``, ``pregreet.failed``

Gauges are read when a snapshot is taken (``connections.active``, ``connections.peak``,
``stress.active``, ...). A Prometheus exporter reads the same snapshot.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self._gauges: dict[str, Callable[[], float | int]] = {}
        self.started = time.time()

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def get(self, name: str) -> int:
        return self.counters.get(name, 0)

    def gauge(self, name: str, read: Callable[[], float | int]) -> None:
        """Register a value that is read at snapshot time."""
        self._gauges[name] = read

    def snapshot(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "rss_kib": _rss_kib(),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "gauges": {name: read() for name, read in sorted(self._gauges.items())},
            "counters": dict(sorted(self.counters.items())),
        }


def _rss_kib() -> int:
    """Resident set size now (Linux /proc), or the peak from getrusage elsewhere."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
