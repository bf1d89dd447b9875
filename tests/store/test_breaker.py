"""The circuit breaker in front of Redis: open after a run of failures, one probe at a time
after the pause, closed by a probe's success, open again by its failure."""

from __future__ import annotations

from mailmoat.store.breaker import Breaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_run_of_failures_opens_it_and_a_success_resets_the_run() -> None:
    b = Breaker(failures=3, open_for=1.0, clock=Clock())
    assert not b.failure() and not b.failure()
    assert not b.success()  # was closed: nothing to report
    assert not b.failure() and not b.failure()
    assert b.allow() and b.closed
    assert b.failure()  # the third in a row: open
    assert not b.closed and not b.allow() and b.opened == 1


def test_one_probe_after_the_pause_closes_or_reopens_it() -> None:
    clock = Clock()
    b = Breaker(failures=2, open_for=1.0, clock=clock)
    b.failure()
    b.failure()
    clock.now += 0.9
    assert not b.allow()  # still paused
    clock.now += 0.2
    assert b.allow()  # the probe
    assert not b.allow()  # only one at a time
    assert not b.failure()  # the probe failed: open again (not a new opening)
    assert not b.allow() and b.opened == 1
    clock.now += 1.1
    assert b.allow()
    assert b.success()  # the probe worked: closed
    assert b.closed and b.allow() and b.allow()
