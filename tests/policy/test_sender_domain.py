"""The sender domain check through a real gateway, the test zone answering in process."""

from __future__ import annotations

import pytest

from tests.support import dns_zone as zone
from tests.support.dns_gateway import dns_gateway
from tests.support.fake_dns import ZoneNameserver

OTHERS_OFF = {"fcrdns.action": "off", "helo.action": "off", "spf.action": "off"}
DMARC_OFF = {"dkim.action": "off", "dmarc.action": "off", "dmarc.quarantine_action": "off"}


def only(action: str, **more: object) -> dict[str, object]:
    return {**OTHERS_OFF, **DMARC_OFF, "sender_domain.action": action, **more}


@pytest.mark.parametrize(
    ("action", "sender", "code"),
    [
        ("reject", "a@sender.test", 250),  # an MX record
        ("reject", "a@mail.sender.test", 250),  # no MX, an address
        ("reject", "a@nowhere.test", 550),  # NXDOMAIN
        ("reject", "", 250),  # the null sender is not checked
        ("tempfail", "a@nowhere.test", 450),
        ("log", "a@nowhere.test", 250),
        ("off", "a@nowhere.test", 250),
    ],
)
async def test_a_sender_domain_must_exist_for_mail(
    fake_dns: ZoneNameserver, action: str, sender: str, code: int
) -> None:
    async with dns_gateway(fake_dns, **only(action)) as gw:
        out = await gw.send(sender=sender)
        assert out.code("rcpt") == code, out.replies
        if code == 550:
            assert out.replies["rcpt"].startswith(b"550 5.1.8 ")


async def test_under_score_a_failure_adds_its_points(fake_dns: ZoneNameserver) -> None:
    settings = only("score", **{"sender_domain.points": 5, "score.threshold": 5})
    async with dns_gateway(fake_dns, **settings) as gw:
        assert (await gw.send(sender="a@sender.test")).code("rcpt") == 250
        refused = await gw.send(sender="a@nowhere.test")
        assert refused.replies["rcpt"].startswith(b"550 5.7.1 Message refused"), refused.replies
    settings["sender_domain.points"] = 4
    async with dns_gateway(fake_dns, **settings) as gw:
        assert (await gw.send(sender="a@nowhere.test")).code("rcpt") == 250


async def test_a_temporary_dns_error_is_never_a_pass(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only("reject", **{"dns.timeout": 0.3})) as gw:
        fake_dns.silent = True
        out = await gw.send(source=zone.GOOD_IP, sender="a@sender.test")
        assert out.code("rcpt") == 451, out.replies
