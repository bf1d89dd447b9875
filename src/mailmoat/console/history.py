"""Messages accepted and refused per minute over the last hour, from successive readings of
the gateway's counters (the console samples them every CONSOLE_SAMPLE_EVERY seconds)."""

from __future__ import annotations

from collections import deque
from typing import Any

from mailmoat.limits import CONSOLE_HISTORY_MINUTES


def refused_total(counters: dict[str, int]) -> int:
    """Connections refused at accept time plus messages refused (5xx) or deferred (4xx)."""
    return (
        sum(v for k, v in counters.items() if k.startswith("refused."))
        + counters.get("messages.refused", 0)
        + counters.get("messages.deferred", 0)
    )


class History:
    """One (minute, accepted, refused) bucket per minute, CONSOLE_HISTORY_MINUTES of them."""

    def __init__(self) -> None:
        self.buckets: deque[list[int]] = deque(maxlen=CONSOLE_HISTORY_MINUTES)
        self._last: tuple[int, int] | None = None

    def add(self, now: float, doc: dict[str, Any]) -> None:
        counters = doc.get("counters", {})
        accepted, refused = counters.get("messages.accepted", 0), refused_total(counters)
        if self._last is None:
            self._last = accepted, refused
        da, dr = max(0, accepted - self._last[0]), max(0, refused - self._last[1])
        self._last = accepted, refused
        minute = int(now // 60)
        if self.buckets and self.buckets[-1][0] == minute:
            self.buckets[-1][1] += da
            self.buckets[-1][2] += dr
        else:
            self.buckets.append([minute, da, dr])

    def series(self, now: float) -> list[tuple[int, int, int]]:
        """(minute, accepted, refused) for each minute of the last hour, oldest first (0 for a
        minute with no reading)."""
        last = int(now // 60)
        counts = {m: (a, r) for m, a, r in self.buckets}
        return [
            (m, *counts.get(m, (0, 0))) for m in range(last - CONSOLE_HISTORY_MINUTES + 1, last + 1)
        ]
