"""Fixed tests for security promises that one-line changes once broke unnoticed: the quoted
authserv-id compared without case, `harvest.exempt_networks` and `score.exempt_networks`
honoured (and only for the networks named), DMARC pct=0 under p=reject not rejecting."""

from __future__ import annotations

import pytest

from mailmoat.policy.auth import authserv_id
from mailmoat.policy.base import Client
from mailmoat.policy.harvest import R_UNIFORM, R_UNKNOWN
from tests.policy.test_harvest import Rig, delay_of, reply_of
from tests.support import dns_zone as zone
from tests.support.dns_gateway import dns_gateway, message
from tests.support.fake_dns import ZoneNameserver

# --- authserv-id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        '"MX.Mailmoat.Test"; spf=pass',
        '"mx.mailmoat.TEST";\r\n\tdkim=pass',
        ' (c) "Mx.MailMoat.Test" 1; none',
        "MX.MAILMOAT.TEST; none",
    ],
)
def test_authserv_id_is_compared_without_case_quoted_or_not(value: str) -> None:
    """RFC 8601 2.5: the authserv-id is a domain name, so case does not matter; a forger who
    quotes it and changes its case must still have the field removed."""
    assert authserv_id(value) == "mx.mailmoat.test"


async def test_quoted_forged_results_in_other_case_are_removed(fake_dns: ZoneNameserver) -> None:
    forged = 'Authentication-Results: "MX.MailMoat.Test"; dkim=pass header.d=bank.test\r\n'
    async with dns_gateway(fake_dns) as gw:
        out = await gw.send(msg=message(extra=forged))
        assert out.code("message") == 250, out.replies
        [delivered] = gw.downstream.messages
    assert b"bank.test" not in delivered
    assert delivered.count(b"Authentication-Results:") == 1  # ours only


# --- harvest.exempt_networks -------------------------------------------------------------------


async def test_harvest_exempt_networks_are_never_counted_or_slowed() -> None:
    """Rig's detector exempts 10.9.0.0/16 as trusted (relay) networks; this setting is the
    other way in and must work by itself."""
    rig = Rig(exempt_networks=["198.51.100.0/24"])
    exempt = Client("198.51.100.9", 1)
    for i in range(30):  # far past tarpit_after 2, threshold 4, ban_after 8
        v = await rig.rcpt(exempt, f"nobody{i}@example.test")
        assert reply_of(v) == R_UNKNOWN and delay_of(v) == 0, (i, v)
    assert await rig.rcpt(exempt, "alice@example.test") is None
    assert await rig.connect(exempt) is None
    assert await rig.detector.scores(exempt) == (0, 0)
    # a neighbour just outside the exempt network is counted: the uniform answer by the 5th
    outside = Client("198.51.101.9", 1)
    verdicts = [await rig.rcpt(outside, f"nobody{i}@example.test") for i in range(5)]
    assert reply_of(verdicts[-1]) == R_UNIFORM
    assert await rig.detector.scores(outside) != (0, 0)


# --- score.exempt_networks ---------------------------------------------------------------------

STRICT = {"fcrdns.action": "reject", "helo.action": "reject"}


async def test_score_exempt_networks_skip_every_dns_check(fake_dns: ZoneNameserver) -> None:
    # the control: without the exemption this client is refused at RCPT
    async with dns_gateway(fake_dns, **STRICT) as gw:
        out = await gw.send(source=zone.NOPTR_IP, helo="localhost", sender="a@example.org")
        assert out.code("rcpt") == 550, out.replies
    exempt = {**STRICT, "score.exempt_networks": ["127.0.0.4/32"]}
    async with dns_gateway(fake_dns, **exempt) as gw:
        out = await gw.send(source=zone.NOPTR_IP, helo="localhost", sender="a@example.org")
        assert out.code("message") == 250, out.replies
        assert b"Authentication-Results" not in gw.downstream.messages[0]
        # only that network: its neighbour without a PTR name is still refused
        out = await gw.send(source=zone.LIAR_IP, helo="localhost", sender="a@example.org")
        assert out.code("rcpt") == 550, out.replies


# --- DMARC pct ---------------------------------------------------------------------------------


async def test_dmarc_pct_zero_under_p_reject_does_not_reject() -> None:
    """RFC 7489 6.6.4: with pct=0 no message is in the sample, so p=reject applies as
    quarantine (scored, 3 points < threshold 5): deterministic, whatever the random draw. The
    same failure under a record without pct is rejected."""
    server = ZoneNameserver.from_dnsmasq(
        [
            *zone.records(),
            'txt-record=zero.test,"v=spf1 -all"',
            'txt-record=_dmarc.zero.test,"v=DMARC1; p=reject; pct=0"',
            'txt-record=full.test,"v=spf1 -all"',
            'txt-record=_dmarc.full.test,"v=DMARC1; p=reject"',
        ]
    )
    quiet = {"fcrdns.action": "log", "helo.action": "log", "spf.action": "log"}
    async with dns_gateway(server, **quiet) as gw:
        for _ in range(3):
            out = await gw.send(sender="a@zero.test", msg=message("a@zero.test"))
            assert out.code("message") == 250, out.replies
        out = await gw.send(sender="a@full.test", msg=message("a@full.test"))
        assert out.code("message") == 550, out.replies
