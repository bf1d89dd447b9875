"""A clock the test moves by hand."""

from __future__ import annotations


class Clock:
    """A clock the test moves by hand (for the store, bans and rate windows)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
