"""Stress-mode promises that mutation testing (scripts/mutation over policy/stress.py) found
nothing holding: the mode ends only *below* `stop_at` of the cap (hysteresis, also long after
the hold), it lasts exactly `hold` seconds after the last high count, each switch counts
once under its own name, and a worker that follows the supervisor takes its "off" as well as
its "on"."""

from __future__ import annotations

from mailmoat.config import StressSettings
from mailmoat.policy.stress import Stress
from mailmoat.stats import Stats
from tests.policy.test_stress import Clock


def _stressed(clock: Clock, seen: list[bool], hold: float = 0) -> Stress:
    """On, with start above 50 and stop below 30 of a 100-connection cap."""
    s = Stress(StressSettings(start_at=0.5, stop_at=0.3, hold=hold), 100, Stats(), clock)
    s.listeners.append(seen.append)
    s.observe(51)
    assert s.active and seen == [True]
    assert s.stats.get("stress.started") == 1 and s.stats.get("stress.stopped") == 0
    return s


def test_between_stop_and_start_the_mode_stays_on_however_long() -> None:
    clock, seen = Clock(), []
    s = _stressed(clock, seen)
    for count in (50, 40, 31, 30):  # 30 is not below stop_at * 100
        clock.now += 100
        s.observe(count)
        s.tick()
        assert s.active, count
    s.observe(29)
    assert not s.active and seen == [True, False]
    assert s.stats.get("stress.started") == 1 and s.stats.get("stress.stopped") == 1


def test_the_mode_ends_hold_seconds_after_the_last_high_count() -> None:
    clock, seen = Clock(), []
    s = _stressed(clock, seen, hold=10)
    clock.now = 9.5
    s.observe(10)
    assert s.active
    clock.now = 10
    s.tick()
    assert not s.active and seen == [True, False]


def test_a_follower_takes_the_supervisors_off_as_well_as_on() -> None:
    seen: list[bool] = []
    clock = Clock()
    clock.now = 1000.0  # long past any hold: only following keeps the mode on
    s = Stress(StressSettings(), 100, Stats(), clock)
    s.listeners.append(seen.append)
    s.follow(True)
    s.tick()  # a follower's own tick (nothing counted) changes nothing
    assert s.active
    s.follow(True)  # no change: the listeners hear nothing
    s.follow(False)
    assert not s.active and seen == [True, False]
