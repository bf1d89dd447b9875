"""FCrDNS promises that mutation testing (scripts/mutation over policy/fcrdns.py) checks, tested
on `iprev` and `FcrdnsCheck` with mailmoat's resolver asking an in-process name server: any of
the client's PTR names that resolves back passes (the one reported), none fails (the first
reported, all named), an unanswered lookup is a temperror (4xx, never a 5xx nor a pass), only
`MAX_NAMES` names are tried; the result from cached answers is the same and is computed at
once, until the first of those answers expires; an exempt or allow-listed client is never
refused."""

from __future__ import annotations

import inspect
from ipaddress import ip_address
from typing import Any

import pytest

from mailmoat import config
from mailmoat.limits import FCRDNS_MAX_NAMES
from mailmoat.policy.base import Client
from mailmoat.policy.fcrdns import R_FCRDNS, FcrdnsCheck, iprev
from mailmoat.policy.results import ALLOWLISTED, Iprev
from mailmoat.policy.score import R_DNS_TEMP, Karma, Outcome
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import Reply
from tests.support.clock import Clock
from tests.support.fake_dns import ZoneNameserver, resolver

TTL = 60
RECORDS = [
    "host-record=mail.good.test,127.0.0.2",
    # two PTR names, the second confirms
    "ptr-record=3.0.0.127.in-addr.arpa,a1.good.test",
    "ptr-record=3.0.0.127.in-addr.arpa,a2.good.test",
    "address=/a1.good.test/127.0.0.9",
    "address=/a2.good.test/127.0.0.3",
    # two PTR names, neither confirms
    "ptr-record=7.0.0.127.in-addr.arpa,b1.good.test",
    "ptr-record=7.0.0.127.in-addr.arpa,b2.good.test",
    "address=/b1.good.test/127.0.0.8",
    "address=/b2.good.test/127.0.0.9",
    # a PTR name nobody answers for (down.test: REFUSED, a temporary error)
    "ptr-record=10.0.0.127.in-addr.arpa,c.down.test",
    # one unanswered, one confirming
    "ptr-record=11.0.0.127.in-addr.arpa,d.down.test",
    "ptr-record=11.0.0.127.in-addr.arpa,d.good.test",
    "address=/d.good.test/127.0.0.11",
    # more names than are tried
    *(f"ptr-record=12.0.0.127.in-addr.arpa,e{i:02}.good.test" for i in range(FCRDNS_MAX_NAMES + 2)),
    *(f"address=/e{i:02}.good.test/127.0.0.99" for i in range(FCRDNS_MAX_NAMES + 2)),
]
ZONES = ("good.test", "in-addr.arpa")


class Rig:
    def __init__(self, *, exempt: list[str] | None = None, **fcrdns: Any) -> None:
        settings = config.build({"fcrdns": fcrdns, "score": {"exempt_networks": exempt or []}})
        self.dns = ZoneNameserver.from_dnsmasq(RECORDS, ttl=TTL, domains=ZONES)
        self.clock = Clock()
        self.resolver = resolver(self.dns, self.clock)
        self.karma = Karma(settings.score)
        self.check = FcrdnsCheck(settings.fcrdns, self.resolver, self.karma)

    def start(self, ip: str) -> Client:
        client = Client(ip, 1)
        assert self.check.connect(client) is None
        return client

    async def rcpt(self, ip: str) -> tuple[Reply | None, bool, Outcome | None]:
        """(verdict, whether it came at once, the outcome recorded)"""
        client = self.start(ip)
        verdict = self.check.rcpt(client, RcptTo("alice@example.test", "example.test"))
        at_once = not inspect.isawaitable(verdict)
        if inspect.isawaitable(verdict):
            verdict = await verdict
        assert verdict is None or isinstance(verdict, Reply)
        return verdict, at_once, self.karma.state(client).client_outcomes.get("fcrdns")


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.2", Iprev("pass", "mail.good.test")),
        ("127.0.0.3", Iprev("pass", "a2.good.test")),
        ("127.0.0.11", Iprev("pass", "d.good.test")),
        ("::ffff:127.0.0.2", Iprev("pass", "mail.good.test")),
        ("127.0.0.4", Iprev("fail", reason="no PTR record")),
        (
            "127.0.0.10",
            Iprev("temperror", "c.down.test", "address lookup of the PTR name failed"),
        ),
    ],
)
async def test_iprev_results(ip: str, expected: Iprev) -> None:
    rig = Rig()
    assert await iprev(rig.resolver, ip_address(ip)) == expected


async def test_no_name_confirming_fails_naming_them_all() -> None:
    """(A PTR RRset has no order: which name is reported first is not defined.)"""
    found = await iprev(Rig().resolver, ip_address("127.0.0.7"))
    assert found.result == "fail" and found.name in ("b1.good.test", "b2.good.test")
    names, _, tail = found.reason.partition(" does not resolve to ")
    assert sorted(names.split(", ")) == ["b1.good.test", "b2.good.test"]
    assert tail == "127.0.0.7"


async def test_only_max_names_ptr_names_are_looked_up() -> None:
    rig = Rig()
    found = await iprev(rig.resolver, ip_address("127.0.0.12"))
    assert found.result == "fail"
    asked = [rig.dns.asked(f"e{i:02}.good.test") for i in range(FCRDNS_MAX_NAMES + 2)]
    assert sum(1 for n in asked if n) == FCRDNS_MAX_NAMES


async def test_an_unanswered_ptr_lookup_is_a_temperror() -> None:
    rig = Rig()
    rig.dns.down = True
    found = await iprev(rig.resolver, ip_address("127.0.0.2"))
    assert found.result == "temperror" and found.reason.startswith("PTR lookup:")


@pytest.mark.parametrize(
    ("action", "ip", "code"),
    [
        ("reject", "127.0.0.2", None),
        ("reject", "127.0.0.4", 550),
        ("reject", "127.0.0.7", 550),
        ("tempfail", "127.0.0.7", 450),
        ("reject", "127.0.0.10", 451),
        ("log", "127.0.0.7", None),
    ],
)
async def test_the_verdict_at_rcpt(action: str, ip: str, code: int | None) -> None:
    verdict, _, outcome = await Rig(action=action).rcpt(ip)
    assert (verdict.code if verdict else None) == code
    if code == 550:
        assert verdict == R_FCRDNS
    if code == 451:
        assert verdict == R_DNS_TEMP
    assert outcome is not None and outcome.verdict == verdict


async def test_under_score_a_failure_adds_its_points_and_a_pass_none() -> None:
    rig = Rig(action="score", points=4)
    outcome = (await rig.rcpt("127.0.0.7"))[2]
    assert outcome is not None and (outcome.result, outcome.points) == ("fail", 4)
    assert (outcome.pending, outcome.verdict) == (0, None)
    outcome = (await rig.rcpt("127.0.0.10"))[2]  # temperror: the points wait
    assert outcome is not None and (outcome.result, outcome.points, outcome.pending) == (
        "temperror",
        0,
        4,
    )
    assert (await rig.rcpt("127.0.0.2"))[2] == Outcome("fcrdns", "pass", "mail.good.test")


async def test_cached_answers_give_the_same_result_at_once_until_the_first_expires() -> None:
    rig = Rig(action="reject")
    first, at_once, _ = await rig.rcpt("127.0.0.7")
    assert not at_once and first == R_FCRDNS
    asked = rig.dns.asked()
    again, at_once, outcome = await rig.rcpt("127.0.0.7")
    assert at_once and again == R_FCRDNS and outcome is not None and outcome.result == "fail"
    assert rig.dns.asked() == asked
    rig.clock.now += TTL + 1
    again, at_once, _ = await rig.rcpt("127.0.0.7")
    assert not at_once and again == R_FCRDNS
    assert rig.dns.asked() > asked
    # a pass from cached answers passes
    await rig.rcpt("127.0.0.3")
    assert await rig.rcpt("127.0.0.3") == (None, True, Outcome("fcrdns", "pass", "a2.good.test"))


async def test_exempt_and_allow_listed_clients_are_never_refused() -> None:
    rig = Rig(action="reject", exempt=["127.0.0.7/32"])
    assert (await rig.rcpt("127.0.0.7"))[0] is None
    assert rig.dns.asked() == 0
    rig = Rig(action="reject")
    client = rig.start("127.0.0.4")
    rig.karma.state(client).set(ALLOWLISTED, True)
    assert rig.check.rcpt(client, RcptTo("alice@example.test", "example.test")) is None
