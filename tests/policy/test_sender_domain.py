"""The sender-domain check against the real DNS server: a domain with an MX passes, one that
does not exist is refused under reject, and a DNS failure is a 4xx, never a pass."""

from __future__ import annotations

from tests.dns.server import Dnsmasq, SilentServer
from tests.policy.dns_support import dns_gateway

OTHERS_OFF = {
    "fcrdns.action": "off",
    "helo.action": "off",
    "spf.action": "off",
    "dkim.action": "off",
    "dmarc.action": "off",
    "dmarc.quarantine_action": "off",
}


async def test_an_unknown_sender_domain_is_refused_under_reject(dns_server: Dnsmasq) -> None:
    async with dns_gateway(
        dns_server.address, **OTHERS_OFF, **{"sender_domain.action": "reject"}
    ) as gw:
        assert (await gw.send(sender="a@sender.test")).code("rcpt") == 250
        refused = await gw.send(sender="a@nowhere.test")
        assert refused.replies["rcpt"].startswith(b"550 5.1.8")


async def test_under_log_and_score_below_the_threshold_it_passes(dns_server: Dnsmasq) -> None:
    for action in ("log", "score"):
        settings = {"sender_domain.action": action, "sender_domain.points": 1}
        async with dns_gateway(dns_server.address, **OTHERS_OFF, **settings) as gw:
            assert (await gw.send(sender="a@nowhere.test")).code("rcpt") == 250


async def test_points_reach_the_threshold(dns_server: Dnsmasq) -> None:
    settings = {"sender_domain.action": "score", "sender_domain.points": 5, "score.threshold": 5}
    async with dns_gateway(dns_server.address, **OTHERS_OFF, **settings) as gw:
        assert (await gw.send(sender="a@nowhere.test")).code("rcpt") == 550


async def test_a_dns_failure_is_a_temporary_refusal(silent_dns: SilentServer) -> None:
    settings = {"sender_domain.action": "reject", "dns.timeout": 0.3}
    async with dns_gateway(silent_dns.address, **OTHERS_OFF, **settings) as gw:
        assert (await gw.send(sender="a@sender.test")).replies["rcpt"].startswith(b"451 4.4.3")
