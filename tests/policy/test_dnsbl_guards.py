"""DNS list promises that mutation testing (scripts/mutation over policy/dnsbl.py) found nothing
holding, tested on `DnsblCheck` itself with mailmoat's resolver asking an in-process name
server: a combined weight of exactly `dnsbl.threshold` refuses (554, naming the lists; 4xx under
tempfail), one less does not; an allow list allow-lists at `allowlist_threshold` and never at 0;
a list that could not be asked defers (4xx) only when its weight could reach the threshold, and
a negative weight never counts towards it; answers are cached for the shortest TTL, never with
an unanswered list, never with `cache_ttl` 0; a mapped IPv4 client is the IPv4 one; under score
the weight becomes points (never negative) and the unanswered weight pending points."""

from __future__ import annotations

import inspect
from typing import Any

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.policy.dnsbl import DnsblCheck
from mailmoat.policy.results import ALLOWLISTED
from mailmoat.policy.score import Karma, Outcome
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import Reply
from mailmoat.store.memory import MemoryStore
from tests.support.clock import Clock
from tests.support.fake_dns import ZoneNameserver, resolver

LISTED = "127.0.0.5"
"""On bl.test (answer 127.0.0.2) and bl2.test (127.0.0.3)."""
ALLOWED = "127.0.0.6"
"""On the allow list wl.test."""
CLEAN = "127.0.0.2"
TTL = 60
"""The zone's answer TTL, below the default `dnsbl.cache_ttl` (300)."""
RECORDS = [
    "address=/5.0.0.127.bl.test/127.0.0.2",
    "address=/5.0.0.127.bl2.test/127.0.0.3",
    "address=/6.0.0.127.wl.test/127.0.0.2",
]
# down.test is served by no one: REFUSED, a temporary error for mailmoat's resolver
ZONES = ("bl.test", "bl2.test", "wl.test")


class Rig:
    def __init__(self, *, exempt: list[str] | None = None, **dnsbl: Any) -> None:
        settings = config.build({"dnsbl": dnsbl, "score": {"exempt_networks": exempt or []}})
        self.dns = ZoneNameserver.from_dnsmasq(RECORDS, ttl=TTL, domains=ZONES)
        self.clock = Clock()
        self.store = MemoryStore(clock=self.clock)
        self.karma = Karma(settings.score)
        self.check = DnsblCheck(
            settings.dnsbl, resolver(self.dns, cache_size=0), self.karma, self.store
        )

    async def rcpt(self, ip: str) -> tuple[Reply | None, Client]:
        client = Client(ip, 1)
        assert self.check.connect(client) is None
        verdict = self.check.rcpt(client, RcptTo("alice@example.test", "example.test"))
        if inspect.isawaitable(verdict):
            verdict = await verdict
        assert verdict is None or isinstance(verdict, Reply)
        return verdict, client

    async def outcome(self, ip: str) -> Outcome:
        _, client = await self.rcpt(ip)
        return self.karma.state(client).client_outcomes["dnsbl"]


async def test_the_combined_weight_refuses_from_the_threshold_on() -> None:
    lists = ["bl.test*2", "bl2.test*1"]
    refused, _ = await Rig(lists=lists, threshold=3).rcpt(LISTED)
    assert refused is not None and (refused.code, refused.enhanced) == (554, "5.7.1")
    assert f"[{LISTED}]" in str(refused) and "bl.test, bl2.test" in str(refused)
    assert (await Rig(lists=lists, threshold=4).rcpt(LISTED))[0] is None
    assert (await Rig(lists=lists, threshold=2).rcpt(LISTED))[0] == refused  # and above it
    assert (await Rig(lists=lists, threshold=3).rcpt(CLEAN))[0] is None
    deferred, _ = await Rig(lists=lists, threshold=3, action="tempfail").rcpt(LISTED)
    assert deferred is not None and (deferred.code, deferred.enhanced) == (451, "4.7.1")
    assert (await Rig(lists=lists, threshold=3, action="log").rcpt(LISTED))[0] is None
    below = await Rig(lists=lists, threshold=4, action="tempfail").outcome(LISTED)
    assert (below.result, below.verdict) == ("pass", None)


async def test_a_reply_outside_the_filter_is_no_listing() -> None:
    assert (await Rig(lists=["bl.test=127.0.0.3"]).rcpt(LISTED))[0] is None
    assert (await Rig(lists=["bl.test=127.0.0.2"]).rcpt(LISTED))[0] is not None


async def test_an_allow_list_allow_lists_at_its_threshold_and_never_at_zero() -> None:
    rig = Rig(lists=["wl.test*-2"], allowlist_threshold=-2)
    assert (await rig.outcome(ALLOWED)).result == "allowed"
    _, client = await rig.rcpt(ALLOWED)
    assert rig.karma.state(client).ready(ALLOWLISTED) is True
    below = await Rig(lists=["wl.test*-2"], allowlist_threshold=-3).outcome(ALLOWED)
    assert below.result == "pass"
    # 0 means never: an unlisted client (weight 0) is not allow-listed
    rig = Rig(lists=["wl.test*-2"], allowlist_threshold=0)
    assert (await rig.outcome(CLEAN)).result == "pass"
    _, client = await rig.rcpt(CLEAN)
    assert not rig.karma.state(client).ready(ALLOWLISTED)


async def test_an_unanswered_list_defers_only_when_it_could_reach_the_threshold() -> None:
    lists = ["bl.test*1", "down.test*1"]
    deferred, _ = await Rig(lists=lists, threshold=2).rcpt(LISTED)
    assert deferred is not None and deferred.code == 451
    outcome = await Rig(lists=lists, threshold=2).outcome(LISTED)
    assert outcome.result == "temperror" and "not answered: down.test" in outcome.reason
    assert (await Rig(lists=lists, threshold=3).rcpt(LISTED))[0] is None
    assert (await Rig(lists=lists, threshold=3, action="tempfail").rcpt(LISTED))[0] is None
    # one unanswered list heavier than the rest: beyond the threshold defers too
    assert (await Rig(lists=["bl.test*1", "down.test*3"], threshold=2).rcpt(LISTED))[0] == deferred
    # an allow list that could not be asked would only have lowered the weight
    assert (await Rig(lists=["bl.test*1", "down.test*-5"], threshold=2).rcpt(LISTED))[0] is None
    # and does not take away the weight of another one that could not be asked
    both = ["bl.test*1", "down.test*1", "down2.test*-5"]
    assert (await Rig(lists=both, threshold=2).rcpt(LISTED))[0] == deferred


async def test_answers_are_kept_for_the_shortest_ttl_and_only_when_all_answered() -> None:
    rig = Rig(lists=["bl.test"])
    assert (await rig.rcpt(LISTED))[0] is not None
    asked = rig.dns.asked()
    rig.clock.now += TTL - 1
    assert (await rig.rcpt(LISTED))[0] is not None  # from the store
    assert rig.dns.asked() == asked
    rig.clock.now += 2
    assert (await rig.rcpt(LISTED))[0] is not None
    assert rig.dns.asked() == asked + 1  # the answer's TTL (60) is shorter than cache_ttl
    assert await rig.store.get(f"dnsbl:{LISTED}") is not None
    # a miss is kept too, for its answer's (negative) TTL when shorter than cache_ttl
    rig = Rig(lists=["bl.test"], cache_ttl=3600)
    await rig.rcpt(CLEAN)
    kept = await rig.store.ttl(f"dnsbl:{CLEAN}")
    assert kept is not None and 0 < kept < 3600
    # a result with an unanswered list is never kept
    rig = Rig(lists=["bl.test", "down.test*-1"])
    await rig.rcpt(CLEAN)
    assert await rig.store.get(f"dnsbl:{CLEAN}") is None
    rig = Rig(lists=["bl.test"], cache_ttl=0)
    await rig.rcpt(LISTED)
    assert await rig.store.get(f"dnsbl:{LISTED}") is None


async def test_a_cached_listing_keeps_its_weight_and_lists() -> None:
    rig = Rig(lists=["bl.test*2", "bl2.test*1"], threshold=3)
    first, _ = await rig.rcpt(LISTED)
    again, _ = await rig.rcpt(LISTED)
    assert first is not None and again == first


async def test_a_mapped_ipv4_client_is_looked_up_as_ipv4() -> None:
    rig = Rig(lists=["bl.test"])
    refused, _ = await rig.rcpt(f"::ffff:{LISTED}")
    assert refused is not None and refused.code == 554
    assert await rig.store.get(f"dnsbl:{LISTED}") is not None


async def test_an_exempt_client_is_not_looked_up() -> None:
    rig = Rig(lists=["bl.test"], exempt=["127.0.0.0/24"])
    assert (await rig.rcpt(LISTED))[0] is None
    assert rig.dns.asked() == 0


async def test_under_score_the_weight_becomes_points_never_negative() -> None:
    outcome = await Rig(lists=["bl.test*2", "bl2.test*1"], threshold=5, action="score").outcome(
        LISTED
    )
    assert (outcome.result, outcome.points, outcome.pending) == ("listed", 3, 0)
    assert outcome.reason == "score 3: bl.test=127.0.0.2, bl2.test=127.0.0.3"
    light = await Rig(lists=["bl.test*1"], threshold=5, action="score").outcome(LISTED)
    assert (light.result, light.points) == ("listed", 1)
    allowed = await Rig(lists=["wl.test*-2"], allowlist_threshold=-5, action="score").outcome(
        ALLOWED
    )
    assert (allowed.result, allowed.points, allowed.pending) == ("pass", 0, 0)
    clean = await Rig(lists=["bl.test*2"], action="score").outcome(CLEAN)
    assert (clean.result, clean.points, clean.pending) == ("pass", 0, 0)
    unknown = await Rig(lists=["bl.test*1", "down.test*4"], threshold=9, action="score").outcome(
        LISTED
    )
    assert (unknown.points, unknown.pending) == (1, 4)
