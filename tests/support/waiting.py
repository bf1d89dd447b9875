"""Bounded waits for a condition: the one way a test waits for something to happen.

A test never reads a count or a state right after an action (the server may not have got there
yet on a busy machine), and never asserts that something took less than N seconds. It waits for
the condition with `wait_until` (blocking code) or `wait_for` (async code) and asserts what the
design promises. The deadline only bounds a failing test: it is generous, because passing
tests return as soon as the condition holds, however long the deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 20.0
"""Default bound on a wait, in seconds: ample on a loaded 2-core machine, far below the
per-test timeout (pytest-timeout, 120 s)."""

INTERVAL = 0.02
"""Seconds between two looks at the condition."""


class ConditionTimeout(AssertionError):
    """The condition did not hold within the deadline (a test failure, not an error)."""


def _failure(what: str, timeout: float, describe: Callable[[], object] | None) -> str:
    detail = f": {describe()}" if describe is not None else ""
    return f"{what} not reached within {timeout:g}s{detail}"


def wait_until(
    predicate: Callable[[], T],
    what: str = "condition",
    timeout: float = DEADLINE,
    interval: float = INTERVAL,
    describe: Callable[[], object] | None = None,
) -> T:
    """Call `predicate` until it returns something truthy and return that; fail after `timeout`.

    `describe` (optional) says what was seen instead, for the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise ConditionTimeout(_failure(what, timeout, describe))
        time.sleep(interval)


async def wait_for(
    predicate: Callable[[], T],
    what: str = "condition",
    timeout: float = DEADLINE,
    interval: float = INTERVAL,
    describe: Callable[[], object] | None = None,
) -> T:
    """`wait_until` for a coroutine: sleeps on the event loop between looks."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if loop.time() >= deadline:
            raise ConditionTimeout(_failure(what, timeout, describe))
        await asyncio.sleep(interval)
