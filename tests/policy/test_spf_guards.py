"""SPF promises that mutation testing (scripts/mutation over policy/spf.py) found nothing
holding: a softfail is never refused by itself (not under `tempfail` either) and, under
`score`, adds `softfail_points`; a result that is neither fail nor softfail nor temperror adds
no points and takes none away; with `spf.helo` the HELO identity is checked and reported
beside a MAIL FROM one; under `off` the RCPT never waits for an SPF result still running; a DNS
error on one PTR name's address lookup skips that name only (RFC 7208 5.5), not the names after
it; a session that ends while its SPF checks run cancels the HELO check too; with every answer
cached, MAIL FROM has its result at once (no task), with the HELO identity checked too. The
DNS answers come from the in-process test zone (tests/support/fake_dns.py)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import pytest

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.policy.results import SPF, SpfResult, SpfResults
from mailmoat.policy.score import Karma
from mailmoat.policy.spf import SpfCheck, SpfEvaluator
from mailmoat.smtp.events import MailFrom, RcptTo
from tests.policy.test_spf_rfc7208 import load_zone
from tests.support import dns_zone as zone
from tests.support.dns_records import TIMEOUT
from tests.support.fake_dns import ZoneNameserver, world
from tests.support.fake_dns import resolver as fake_resolver
from tests.support.waiting import wait_for

RCPT = RcptTo("alice@example.test", "example.test")


def _check(nameserver: ZoneNameserver | None = None, **spf: Any) -> SpfCheck:
    settings = config.build({"spf": spf})
    resolver = fake_resolver(nameserver or world())
    return SpfCheck(settings.spf, resolver, Karma(settings.score))


def _rcpt(check: SpfCheck, result: str) -> tuple[object, tuple[int, int]]:
    """The RCPT verdict for an SPF `result` of the MAIL FROM identity, and the session's
    (score, pending points) after it."""
    client = Client("192.0.2.60", 1)
    st = check.karma.state(client)
    st.set(SPF, SpfResults(SpfResult("mailfrom", "sender.test", result), None))
    verdict = check.rcpt(client, RCPT)
    return verdict, st.totals()


@pytest.mark.parametrize("action", ["tempfail", "reject", "score"])
def test_a_softfail_is_never_refused_by_itself(action: str) -> None:
    verdict, _ = _rcpt(_check(action=action), "softfail")
    assert verdict is None


def test_a_softfail_adds_its_points_under_score() -> None:
    check = _check(action="score", fail_points=3, softfail_points=2)
    assert _rcpt(check, "softfail") == (None, (2, 0))
    assert _rcpt(check, "fail") == (None, (3, 0))
    assert _rcpt(check, "temperror") == (None, (0, 3))  # held pending
    # a temporary error holds fail_points pending, never softfail_points
    assert _rcpt(_check(action="score", fail_points=0), "temperror") == (None, (0, 0))


@pytest.mark.parametrize("result", ["pass", "none", "neutral", "permerror"])
def test_other_results_add_no_points_and_take_none_away(result: str) -> None:
    assert _rcpt(_check(action="score"), result) == (None, (0, 0))


async def test_the_helo_identity_is_checked_beside_a_sender() -> None:
    check = _check(helo=True)
    client = Client(zone.GOOD_IP, 1)
    client.helo = zone.GOOD_HELO
    results = await check.evaluate(client, "a@sender.test", zone.GOOD_IP)
    assert results.mailfrom.identity == "mailfrom"
    assert results.helo is not None, results
    assert (results.helo.identity, results.helo.domain) == ("helo", zone.GOOD_HELO)
    # and without `spf.helo`, only for the null sender
    off = await _check(helo=False).evaluate(client, "a@sender.test", zone.GOOD_IP)
    assert off.helo is None and off.mailfrom.identity == "mailfrom"


async def test_off_never_waits_for_the_result_at_rcpt() -> None:
    check = _check(action="off")
    client = Client("192.0.2.61", 1)
    st = check.karma.state(client)
    never: asyncio.Future[SpfResults] = asyncio.get_running_loop().create_future()
    st.start(SPF, never)  # an SPF evaluation still running
    try:
        assert check.rcpt(client, RCPT) is None
    finally:
        st.close()


async def test_a_ptr_name_whose_address_lookup_fails_skips_that_name_only() -> None:
    names = load_zone(
        {
            "ptr.example.com": [{"SPF": "v=spf1 ptr -all"}],
            "4.2.0.192.in-addr.arpa": [
                {"PTR": "bad.ptr.example.com"},
                {"PTR": "ok.ptr.example.com"},
            ],
            "bad.ptr.example.com": [TIMEOUT],
            "ok.ptr.example.com": [{"A": "192.0.2.4"}],
        }
    )
    for _ in range(64):  # the server shuffles the two names: an answer with the bad one first
        resolver = fake_resolver(ZoneNameserver(names, domains=None), timeout=0.3)
        ptr = await resolver.query("4.2.0.192.in-addr.arpa", "PTR")  # cached for the check
        if str(ptr.records[0]).startswith("bad."):
            break
    assert str(ptr.records[0]).startswith("bad."), ptr
    got = await SpfEvaluator(resolver).check("192.0.2.4", "a@ptr.example.com", "helo.example.com")
    assert got.result == "pass", got


async def test_a_cancelled_evaluation_cancels_the_helo_check_too() -> None:
    silent = world()
    silent.silent = True  # every lookup waits: both identities are still being checked
    check = _check(silent, helo=True)
    client = Client(zone.GOOD_IP, 1)
    client.helo = zone.GOOD_HELO
    running = asyncio.ensure_future(check.evaluate(client, "a@sender.test", zone.GOOD_IP))
    await wait_for(lambda: silent.asked() >= 2, "both identities' first lookups")
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    helo = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "SpfEvaluator.check"]
    assert helo and all(t.done() or t.cancelling() for t in helo), helo
    await asyncio.gather(*helo, return_exceptions=True)


async def test_with_every_answer_cached_the_result_is_there_at_mail() -> None:
    check = _check(helo=True)
    client = Client(zone.GOOD_IP, 1)
    client.helo = zone.GOOD_HELO
    await check.evaluate(client, "a@sender.test", zone.GOOD_IP)  # the answers, now cached
    check.mail(client, MailFrom("a@sender.test"))
    found = check.karma.state(client).ready(SPF)
    assert isinstance(found, SpfResults) and found.helo is not None, found
    assert (found.mailfrom.result, found.helo.result) == ("pass", "pass")
    # without spf.helo, the null sender's result (the HELO identity's) is there at once too
    quiet = _check(helo=False)
    await quiet.evaluate(client, "", zone.GOOD_IP)
    other = Client(zone.GOOD_IP, 2)
    other.helo = zone.GOOD_HELO
    quiet.mail(other, MailFrom(""))
    null = quiet.karma.state(other).ready(SPF)
    assert isinstance(null, SpfResults) and null.mailfrom.identity == "helo", null
