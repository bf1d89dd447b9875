"""Stress mode as a state machine: thresholds, hysteresis, hold time, listeners, counters."""

from __future__ import annotations

from mailmoat.config import StressSettings
from mailmoat.policy.stress import Stress
from mailmoat.stats import Stats


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def test_switches_on_above_start_and_off_below_stop_after_hold() -> None:
    clock, stats = Clock(), Stats()
    seen: list[bool] = []
    s = Stress(StressSettings(start_at=0.5, stop_at=0.3, hold=10), 100, stats, clock)
    s.listeners.append(seen.append)
    s.observe(50)
    assert not s.active
    s.observe(51)
    assert s.active and seen == [True]
    clock.now = 5
    s.observe(40)  # between stop and start: stays on
    s.observe(20)  # below stop, but not yet `hold` seconds after the last high
    assert s.active
    clock.now = 11
    s.tick()
    assert not s.active and seen == [True, False]
    assert stats.get("stress.started") == 1 and stats.get("stress.stopped") == 1


def test_start_at_one_never_starts() -> None:
    s = Stress(StressSettings(start_at=1.0, stop_at=0.5), 10, Stats())
    s.observe(11)
    assert not s.active


def test_capacity_follows_the_clamped_connection_cap() -> None:
    s = Stress(StressSettings(start_at=0.5, stop_at=0.5, hold=0), 1000, Stats())
    s.set_capacity(10)
    s.observe(6)
    assert s.active
    s.observe(4)
    assert not s.active
