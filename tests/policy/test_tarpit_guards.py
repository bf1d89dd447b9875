"""Tarpit promises that mutation testing (scripts/mutation over policy/tarpit.py) found nothing
holding: the error delay starts after `tarpit.error_threshold` errors and grows by
`tarpit.error_delay` per error up to `tarpit.max_delay`; in stress mode nothing is delayed and
a session is closed, with a strike, from `stress.max_errors` errors on (also when it already
had more when the mode started); a trusted client is never delayed or closed; a suspect's
greeting is held, but not a trusted one's nor anyone's under stress."""

from __future__ import annotations

from typing import Any

from mailmoat import config
from mailmoat.config import BanSettings, StressSettings
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Client, Decision
from mailmoat.policy.stress import Stress
from mailmoat.policy.tarpit import Tarpit
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.policy.test_bans import Clock, _settle

ERROR = Rejected("unknown_command", reply(500, "5.5.2", "x"))


def _tarpit(stressed: bool = False, **tarpit: Any) -> tuple[Tarpit, BanList, Stats]:
    clock = Clock()
    stats = Stats()
    settings = config.build({"tarpit": tarpit, "stress": {"max_errors": 3}})
    bans = BanList(BanSettings(strikes=3), MemoryStore(clock=clock), stats, clock)
    stress = Stress(StressSettings(max_errors=3), 100, stats, clock)
    stress.active = stressed
    return Tarpit(settings, bans, stress, stats), bans, stats


def _client(address: str, errors: int = 0, trusted: bool = False) -> Client:
    client = Client(address, 1)
    client.errors = errors
    client.trusted = trusted
    return client


def _delays(tarpit: Tarpit, errors: range, trusted: bool = False) -> list[float]:
    out = []
    for n in errors:
        verdict = tarpit.rejected(_client("192.0.2.40", n, trusted), ERROR)
        assert verdict is None or isinstance(verdict, Decision), verdict
        out.append(0.0 if verdict is None else verdict.delay)
    return out


def test_the_error_delay_starts_after_the_threshold_and_grows_to_the_maximum() -> None:
    tarpit, _, _ = _tarpit(error_threshold=3, error_delay=0.5, max_delay=2.0)
    # errors 1..3 answered at once; then 0.5 s more per error, capped at 2 s
    assert _delays(tarpit, range(1, 9)) == [0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0]


def test_no_error_reply_is_delayed_below_the_threshold() -> None:
    """Not even a zero or negative "delay" (which the session would count as a tarpit hold)."""
    tarpit, _, _ = _tarpit(error_threshold=5, error_delay=1.0)
    for n in range(5):
        assert tarpit.rejected(_client("192.0.2.41", n), ERROR) is None, n


async def test_a_trusted_client_is_never_delayed_nor_closed() -> None:
    tarpit, _, _ = _tarpit(error_threshold=1, error_delay=1.0)
    assert _delays(tarpit, range(1, 6), trusted=True) == [0] * 5
    stressed, bans, stats = _tarpit(stressed=True)
    for n in range(1, 6):
        assert stressed.rejected(_client("192.0.2.42", n, trusted=True), ERROR) is None
    assert stats.get("tarpit.stress_closed") == 0 and not bans.suspect("192.0.2.42")


async def test_under_stress_errors_are_not_delayed_and_max_errors_closes_with_a_strike() -> None:
    tarpit, bans, stats = _tarpit(stressed=True, error_threshold=0, error_delay=1.0)
    for n in (1, 2):  # below stress.max_errors 3: neither delayed nor closed
        assert tarpit.rejected(_client("192.0.2.43", n), ERROR) is None, n
    assert not bans.suspect("192.0.2.43")
    verdict = tarpit.rejected(_client("192.0.2.43", 3), ERROR)
    assert isinstance(verdict, Decision) and verdict.close and verdict.delay == 0
    assert verdict.reply is not None and verdict.reply.code == 421
    await _settle(bans)
    assert stats.get("tarpit.stress_closed") == 1 and bans.suspect("192.0.2.43")


async def test_under_stress_a_session_already_past_max_errors_is_closed_at_its_next_error() -> None:
    """Stress mode can start while a session has more errors than `stress.max_errors`."""
    tarpit, bans, _ = _tarpit(stressed=True)
    verdict = tarpit.rejected(_client("192.0.2.44", 7), ERROR)
    assert isinstance(verdict, Decision) and verdict.close and verdict.reply is not None
    await _settle(bans)
    assert bans.suspect("192.0.2.44")


async def test_a_suspects_greeting_is_held_but_not_a_trusted_ones_nor_under_stress() -> None:
    tarpit, bans, stats = _tarpit(suspect_delay=2.5)
    for addr in ("192.0.2.45", "192.0.2.46"):
        bans.strike(addr, "rate")
    await _settle(bans)
    assert tarpit.connect(_client("192.0.2.47")) is None  # no strike: greeted at once
    verdict = tarpit.connect(_client("192.0.2.45"))
    assert isinstance(verdict, Decision) and verdict.delay == 2.5 and verdict.reply is None
    assert tarpit.connect(_client("192.0.2.46", trusted=True)) is None
    tarpit.stress.active = True
    assert tarpit.connect(_client("192.0.2.45")) is None
    assert stats.get("tarpit.suspect") == 1
