"""Harvest detection edges that mutation testing (scripts/mutation) showed no test held:
the per-network escalation step by step (tarpit delays, the uniform answer from exactly
network_threshold on, the ban at exactly network_ban_after), closing at exactly ban_after,
the exact uniform and ban replies, the one log line per source at the threshold, and the
bound on the key cache."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from mailmoat.policy import harvest
from mailmoat.policy.base import Client, Decision
from mailmoat.policy.harvest import R_BANNED, R_UNIFORM, R_UNKNOWN
from tests.policy.test_harvest import Rig, delay_of, reply_of
from tests.support.dns_gateway import captured_logs


def answer(v: object) -> tuple[object, float, bool]:
    """(reply, delay, close) of a verdict, whatever else a Decision carries."""
    assert isinstance(v, Decision), v
    return v.reply, v.delay, v.close


def test_uniform_answer_is_450_4_7_1_and_the_ban_421() -> None:
    """Legitimate mail from a harvesting network is deferred (its server retries), never
    refused for good; a banned source is told to come back later."""
    assert (R_UNIFORM.code, R_UNIFORM.enhanced) == (450, "4.7.1")
    assert (R_BANNED.code, R_BANNED.enhanced) == (421, "4.7.0")
    assert (R_UNKNOWN.code, R_UNKNOWN.enhanced) == (550, "5.1.1")


async def test_network_escalation_step_by_step() -> None:
    """Many addresses of one /24, one unknown recipient each (no single address is a
    suspect): network_tarpit_after 5, network_threshold 10, network_ban_after 20 (Rig)."""
    rig = Rig()

    def member(i: int) -> Client:
        return Client(f"198.51.100.{i}", 1)

    # below network_threshold: a growing tarpit from network_tarpit_after on, at most 2 s
    expected = [0, 0, 0, 0, 0, 0.5, 1.0, 1.5, 2.0, 2.0]
    for score, delay in enumerate(expected):
        probe = await rig.rcpt(member(200 + score), "alice@example.test")  # valid: not counted
        assert reply_of(probe) is None and delay_of(probe) == pytest.approx(delay), score
        unknown = await rig.rcpt(member(score + 1), f"nobody{score}@example.test")
        assert reply_of(unknown) == R_UNKNOWN, score
    assert await rig.detector.scores(member(250)) == (0, 10)
    # from network_threshold on: the uniform answer, each one counted, the ban at exactly 20
    for score in range(10, 20):
        v = await rig.rcpt(member(100 + score), "alice@example.test")
        assert isinstance(v, Decision) and v.reply == R_UNIFORM, score
        assert v.close is (score + 1 >= 20), score
    assert answer(await rig.connect(member(251))) == (R_BANNED, 0.0, True)
    assert await rig.connect(Client("198.51.101.1", 1)) is None  # the next /24 is not banned


async def test_unknown_recipient_closes_at_exactly_ban_after() -> None:
    rig = Rig(tarpit_after=8, threshold=8, ban_after=8)
    client = Client("192.0.2.50", 1)
    for i in range(7):
        v = await rig.rcpt(client, f"nobody{i}@example.test")
        assert reply_of(v) == R_UNKNOWN and not v.close, i
    v = await rig.rcpt(client, "nobody7@example.test")
    assert reply_of(v) == R_UNKNOWN and v.close


async def test_network_unknowns_close_at_exactly_network_ban_after() -> None:
    rig = Rig(network_tarpit_after=6, network_threshold=6, network_ban_after=6)
    for i in range(5):
        v = await rig.rcpt(Client(f"203.0.113.{i + 1}", 1), f"nobody{i}@example.test")
        assert reply_of(v) == R_UNKNOWN and not v.close, i
    v = await rig.rcpt(Client("203.0.113.9", 1), "nobody9@example.test")
    assert reply_of(v) == R_UNKNOWN and v.close


async def test_one_uniform_log_line_per_source_at_the_threshold() -> None:
    rig = Rig()
    client = Client("192.0.2.60", 1)
    with captured_logs() as logs:
        for i in range(7):  # threshold 4, ban_after 8: uniform from the 5th on
            await rig.rcpt(client, f"nobody{i}@example.test")
    uniform = [f for f in logs.of("harvest") if f.get("action") == "uniform"]
    assert [f["source"] for f in uniform] == ["ip:192.0.2.60"]
    assert uniform[0]["score"] == 4


async def test_ban_log_line_names_the_source() -> None:
    rig = Rig()
    client = Client("192.0.2.61", 1)
    with captured_logs() as logs:
        for i in range(8):
            await rig.rcpt(client, f"nobody{i}@example.test")
    bans = [f for f in logs.of("harvest") if f.get("action") == "ban"]
    assert [f["source"] for f in bans] == ["ip:192.0.2.61"]


def test_the_key_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """One entry per client address would grow without end under a spread-out attack
    (invariant 3); the cache is emptied when full. (A bound of 1000 here instead of 65536
    keeps the test quick; it is above CPython's small-int cache on purpose.)"""
    monkeypatch.setattr(harvest, "KEY_CACHE", 1000)
    rig = Rig()
    base = int(IPv4Address("10.0.0.0"))
    for i in range(2500):
        rig.detector.keys(Client(str(IPv4Address(base + i)), 1))
        assert len(rig.detector._keys) <= 1000
    assert len(rig.detector._keys) > 0


async def test_exempt_network_written_with_host_bits() -> None:
    rig = Rig(exempt_networks=["198.51.100.7/24"])
    client = Client("198.51.100.200", 1)
    for i in range(10):
        v = await rig.rcpt(client, f"nobody{i}@example.test")
        assert reply_of(v) == R_UNKNOWN and delay_of(v) == 0


async def test_a_banned_source_in_session_is_answered_uniformly_and_closed() -> None:
    rig = Rig()
    client = Client("192.0.2.70", 1)
    for i in range(8):  # ban_after 8
        await rig.rcpt(client, f"nobody{i}@example.test")
    for address in ("alice@example.test", "nobody99@example.test"):
        v = await rig.rcpt(Client("192.0.2.70", 2), address)
        assert answer(v) == (R_UNIFORM, 2.0, True), address


async def test_a_source_still_over_the_limit_is_banned_again_when_its_ban_ends() -> None:
    """ban_time 50 s, window 100 s: a harvester that comes back when its ban ends, with its
    score still past ban_after, is banned again at its next unknown recipient."""
    rig = Rig()
    client = Client("192.0.2.71", 1)
    for i in range(8):
        await rig.rcpt(client, f"nobody{i}@example.test")
    assert answer(await rig.connect(Client("192.0.2.71", 2))) == (R_BANNED, 0.0, True)
    rig.clock.now += 51  # the ban is over, the events are still in the window
    assert await rig.connect(Client("192.0.2.71", 3)) is None
    v = await rig.rcpt(Client("192.0.2.71", 3), "alice@example.test")
    assert isinstance(v, Decision) and v.reply == R_UNIFORM and v.close
    assert answer(await rig.connect(Client("192.0.2.71", 4))) == (R_BANNED, 0.0, True)
