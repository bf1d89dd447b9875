"""The DNS check settings no other test exercised, each shown by its effect through a real
gateway and the private dnsmasq: the points of every failed check (points that reach
score.threshold refuse, zero points do not), score.action, the DNS list's allow-list threshold
and cache, the SPF result cache, DKIM's signature limit and threads, and the
Authentication-Results header switch."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from mailmoat.policy.spf import SpfCheck
from tests.policy.test_dns_auth import dkim_check, header_of
from tests.support import dns_zone as zone
from tests.support.dns_gateway import Outcome, dns_gateway, message, sign
from tests.support.fake_dns import ZoneNameserver

LOG_ONLY = {
    "fcrdns.action": "log",
    "helo.action": "log",
    "spf.action": "log",
    "dkim.action": "log",
    "dmarc.action": "log",
    "dmarc.quarantine_action": "log",
    "score.threshold": 5,
}


def only(**overrides: Any) -> dict[str, Any]:
    return {**LOG_ONLY, **overrides}


def refused(out: Outcome) -> bool:
    return out.last[:1] in (b"4", b"5") and out.code("message") != 250


# (setting, its action setting and value, what the client does to earn the points)
POINTS = [
    ("fcrdns.points", {"fcrdns.action": "score"}, {"source": zone.NOPTR_IP}),
    ("helo.invalid_points", {"helo.action": "score"}, {"helo": "localhost"}),
    ("helo.mismatch_points", {"helo.action": "score"}, {"helo": "[127.0.0.99]"}),
    ("helo.unresolvable_points", {"helo.action": "score"}, {"helo": "ghost.sender.test"}),
    ("helo.forged_points", {"helo.action": "score"}, {"helo": zone.OUR_HOSTNAME}),
    ("spf.fail_points", {"spf.action": "score"}, {"source": zone.NOPTR_IP}),
    (
        "spf.softfail_points",
        {"spf.action": "score"},
        {"source": zone.NOPTR_IP, "sender": "a@soft.test", "msg": message("a@soft.test")},
    ),
    (
        "dkim.points",
        {"dkim.action": "score"},
        {"msg": sign(message()).replace(b"Hello.", b"Hello!")},
    ),
    ("dmarc.reject_points", {"dmarc.action": "score"}, {"source": zone.NOPTR_IP}),
    (
        "dmarc.quarantine_points",
        {"dmarc.quarantine_action": "score"},
        {"source": zone.NOPTR_IP, "sender": "a@soft.test", "msg": message("a@soft.test")},
    ),
]


@pytest.mark.parametrize(("setting", "action", "send"), POINTS, ids=[p[0] for p in POINTS])
async def test_points_reach_the_threshold_or_not(
    fake_dns: ZoneNameserver, setting: str, action: dict[str, Any], send: dict[str, Any]
) -> None:
    for points, refuses in ((5, True), (0, False)):
        async with dns_gateway(fake_dns, **only(**action, **{setting: points})) as gw:
            out = await gw.send(**send)
        assert refused(out) is refuses, (setting, points, out.replies)
        if refuses:
            assert out.last.startswith(b"550 5.7.1"), out.replies


@pytest.mark.parametrize(("action", "code"), [("reject", b"550 5.7.1"), ("tempfail", b"450 4.7.1")])
async def test_score_action(fake_dns: ZoneNameserver, action: str, code: bytes) -> None:
    settings = only(**{"helo.action": "score", "score.action": action})
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(helo=zone.OUR_HOSTNAME)  # forged: 5 points
        assert out.code("message") == 0 and out.last.startswith(code), out.replies
        assert gw.downstream.messages == []


@pytest.mark.parametrize("enabled", [True, False])
async def test_auth_results_header(fake_dns: ZoneNameserver, enabled: bool) -> None:
    forged = "Authentication-Results: mx.mailmoat.test; spf=pass\r\n"
    settings = only(**{"auth.results_header": enabled})
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(msg=message(extra=forged))
        assert out.code("message") == 250
        [delivered] = gw.downstream.messages
    assert (b"Authentication-Results:" in delivered) is enabled
    assert forged.encode() not in delivered  # forged ones are removed either way
    if enabled:
        assert "spf=pass smtp.mailfrom=sender.test" in header_of(delivered)


@pytest.mark.parametrize(("threshold", "allowed"), [(-1, True), (-2, True), (0, False)])
async def test_dnsbl_allowlist_threshold(
    fake_dns: ZoneNameserver, threshold: int, allowed: bool
) -> None:
    """ALLOWED_IP has no PTR name but weighs -2 on wl.test: allow-listed (and so spared the
    FCrDNS refusal) only when the threshold is -2 or above; 0 means never."""
    settings = only(
        **{
            "dnsbl.lists": ["wl.test*-2"],
            "dnsbl.allowlist_threshold": threshold,
            "fcrdns.action": "reject",
        }
    )
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(source=zone.ALLOWED_IP)
    assert (out.code("message") == 250) is allowed, out.replies
    if not allowed:
        assert out.code("rcpt") == 550


@pytest.mark.parametrize(("ttl", "queries"), [(300.0, 1), (0.0, 3)])
async def test_dnsbl_cache_ttl(fake_dns: ZoneNameserver, ttl: float, queries: int) -> None:
    """With the resolver's own cache off, the client's combined result is kept for
    dnsbl.cache_ttl: one query for three connections, or one query each with 0."""
    settings = only(**{"dnsbl.lists": ["bl.test"], "dnsbl.cache_ttl": ttl, "dns.cache_size": 0})
    name = "5.0.0.127.bl.test"
    async with dns_gateway(fake_dns, **settings) as gw:
        before = fake_dns.asked(name)
        for _ in range(3):
            assert (await gw.send(source=zone.LISTED_IP)).code("rcpt") == 554
        assert fake_dns.asked(name) - before == queries


@pytest.mark.parametrize(("size", "cached"), [(10_000, True), (0, False)])
async def test_spf_cache_size(fake_dns: ZoneNameserver, size: int, cached: bool) -> None:
    """A second message from the same client and sender takes its SPF result from the result
    cache (no pyspf run) unless spf.cache_size is 0."""
    async with dns_gateway(fake_dns, **only(**{"spf.cache_size": size})) as gw:
        [spf_check] = [c for c in gw.gateway.pipeline.checks if isinstance(c, SpfCheck)]
        assert (await gw.send()).code("message") == 250
        runs = spf_check.evaluator.evaluations
        assert (await gw.send()).code("message") == 250
        again = spf_check.evaluator.evaluations - runs
    assert (again == 0) is cached, again


@pytest.mark.parametrize(("limit", "entries"), [(5, 2), (1, 1)])
async def test_dkim_max_signatures(fake_dns: ZoneNameserver, limit: int, entries: int) -> None:
    twice = sign(sign(message()))
    async with dns_gateway(fake_dns, **only(**{"dkim.max_signatures": limit})) as gw:
        assert (await gw.send(msg=twice)).code("message") == 250
        [delivered] = gw.downstream.messages
    assert header_of(delivered).count("dkim=pass") == entries


async def test_dkim_workers(fake_dns: ZoneNameserver) -> None:
    """dkim.workers bounds the verifying threads: with 1, four messages at once never start a
    second thread."""
    # another gateway's may still be ending; Thread objects, not idents (which the OS reuses)
    before = set(threading.enumerate())
    seen: set[str] = set()
    async with dns_gateway(fake_dns, **only(**{"dkim.workers": 1})) as gw:
        verifier = dkim_check(gw).verifier
        assert verifier._executor()._max_workers == 1
        signed = sign(message())
        results = await asyncio.gather(*(gw.send(msg=signed) for _ in range(4)))
        seen |= {
            t.name
            for t in threading.enumerate()
            if t.name.startswith("mailmoat-dkim") and t not in before
        }
        assert all(r.code("message") == 250 for r in results)
        assert len(gw.downstream.messages) == 4
    assert len(seen) == 1, seen


@pytest.mark.parametrize(("action", "code"), [("reject", 554), ("tempfail", 451), ("log", 250)])
async def test_dnsbl_action(fake_dns: ZoneNameserver, action: str, code: int) -> None:
    """dnsbl.action for a listed client: a permanent refusal, a temporary one (never points
    that a low score would let through), or only a log line."""
    settings = only(**{"dnsbl.lists": ["bl.test"], "dnsbl.action": action})
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(source=zone.LISTED_IP)
        assert out.code("rcpt") == code, out.replies
        assert len(gw.downstream.messages) == (1 if action == "log" else 0)


@pytest.mark.parametrize("action", ["reject", "tempfail"])
async def test_dnsbl_listing_under_the_threshold_is_no_refusal(
    fake_dns: ZoneNameserver, action: str
) -> None:
    """A listing that weighs less than dnsbl.threshold refuses nothing under reject or tempfail
    (only action = "score" turns its weight into points)."""
    settings = only(**{"dnsbl.lists": ["bl.test*1"], "dnsbl.threshold": 2, "dnsbl.action": action})
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(source=zone.LISTED_IP)
        assert out.code("message") == 250, out.replies
