"""Ban promises that mutation testing (scripts/mutation over policy/bans.py, a run cut short)
found nothing holding: the strike goes to the untrusted client that was refused, never to a
trusted one, and a manual ban holds for its length."""

from __future__ import annotations

from mailmoat.policy.base import Client
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from tests.policy.test_bans import Clock, _bans, _settle


async def test_refusals_strike_the_untrusted_client_and_ban_it_never_the_trusted() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock, strikes=2)
    r = reply(421, "4.7.0", "x")
    untrusted = Client("192.0.2.20", 1)
    trusted = Client("192.0.2.21", 1)
    trusted.trusted = True
    for _ in range(3):
        bans.rejected(untrusted, Rejected("too_many_errors", r))
        bans.rejected(trusted, Rejected("too_many_errors", r))
        await _settle(bans)
        clock.now += 2  # past the cooldown between two strikes
    assert await bans.banned("192.0.2.20")
    assert not await bans.banned("192.0.2.21")


async def test_a_manual_ban_holds_for_its_length_then_ends() -> None:
    clock = Clock()
    bans, _, _ = _bans(clock)
    await bans.ban_manually("192.0.2.30", 100)
    assert bans.banned_now("192.0.2.30")
    clock.now += 99
    assert bans.banned_now("192.0.2.30")
    clock.now += 2
    assert not bans.banned_now("192.0.2.30")
