"""Stress mode (Postfix's idea): when the open connections pass a threshold, timeouts and limits
tighten so that idle and slow clients give their slots back quickly; when the load falls
again, they relax.

The state is one boolean that the session and the checks read (`Stress.active`); `observe()`
is told the connection count on every connect and disconnect and costs two comparisons unless
the mode changes. `stress.hold` keeps the mode on for a while after the count was last above
`start_at`, and `stop_at` below `start_at` gives hysteresis, so closing the idle clients that
the tighter deadlines catch does not switch the mode straight off and on again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mailmoat import logs
from mailmoat.config import StressSettings
from mailmoat.stats import Stats


class Stress:
    def __init__(
        self,
        settings: StressSettings,
        capacity: int,
        stats: Stats,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.stats = stats
        self.clock = clock
        self.active = False
        self.listeners: list[Callable[[bool], None]] = []
        self._last_high = 0.0
        self._count = 0
        self.following = False  # a worker's: the supervisor decides
        self.set_capacity(capacity)
        stats.gauge("stress.active", lambda: int(self.active))

    def set_capacity(self, capacity: int) -> None:
        """The connection cap the fractions refer to (admission.max_connections, as clamped)."""
        self.capacity = capacity
        self.start_above = int(capacity * self.settings.start_at)
        self.stop_below = int(capacity * self.settings.stop_at)

    def observe(self, connections: int) -> None:
        self._count = connections
        if connections > self.start_above and self.settings.start_at < 1:
            self._last_high = self.clock()
            if not self.active:
                self._switch(True)
        elif self.active and connections < self.stop_below:
            self.tick()

    def tick(self) -> None:
        """Re-evaluate without a new count (the gateway calls this every second)."""
        if (
            self.active
            and not self.following
            and self._count < self.stop_below
            and self.clock() - self._last_high >= self.settings.hold
        ):
            self._switch(False)

    def follow(self, on: bool) -> None:
        """Take the mode the supervisor decided (a worker counts no connections itself, and
        from now on neither `observe` nor `tick` change the mode here)."""
        self.following = True
        if on != self.active:
            self.active = on
            for listener in self.listeners:
                listener(on)

    def _switch(self, on: bool) -> None:
        self.active = on
        self.stats.incr("stress.started" if on else "stress.stopped")
        logs.event(
            "stress_on" if on else "stress_off",
            logging.WARNING,
            connections=self._count,
            start_above=self.start_above,
            stop_below=self.stop_below,
        )
        for listener in self.listeners:
            listener(on)
