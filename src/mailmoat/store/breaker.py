"""A circuit breaker: after a run of failures, stop calling a dependency for a while.

Closed: calls go through; `BREAKER_FAILURES` failures in a row open it. Open: `allow` says no
(the caller answers from its fallback at once, without waiting on a dead peer) until
`BREAKER_OPEN` seconds have passed; then one call at a time may probe (half-open): its success
closes the breaker, its failure opens it again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mailmoat.limits import BREAKER_FAILURES, BREAKER_OPEN


class Breaker:
    def __init__(
        self,
        failures: int = BREAKER_FAILURES,
        open_for: float = BREAKER_OPEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.open_for = open_for
        self.clock = clock
        self._failed = 0  # consecutive failures
        self._until = 0.0  # while open: when a probe may go
        self._probing = False
        self.opened = 0  # times it opened (a counter for the stats)

    @property
    def closed(self) -> bool:
        return self._failed < self.failures

    def allow(self) -> bool:
        """Whether a call may go to the dependency now."""
        if self.closed:
            return True
        if self._probing or self.clock() < self._until:
            return False
        self._probing = True
        return True

    def success(self) -> bool:
        """Record a call that worked; True when that closed an open breaker."""
        was_open = not self.closed
        self._failed = 0
        self._probing = False
        return was_open

    def failure(self) -> bool:
        """Record a call that failed; True when that opened the breaker."""
        was_closed = self.closed
        self._failed += 1
        self._probing = False
        if not self.closed:
            self._until = self.clock() + self.open_for
            if was_closed:
                self.opened += 1
                return True
        return False
