"""The in-process name server answers as the private dnsmasq does for the same records, so the
check tests that use it test what they would test against the real server."""

from __future__ import annotations

import pytest

from mailmoat import config
from mailmoat.dns import Resolver, Status
from tests.support.dns_records import from_dnsmasq
from tests.support.dnsmasq import Dnsmasq
from tests.support.fake_dns import ZoneNameserver, resolver, world

QUESTIONS = [
    ("mail.sender.test", "A"),
    ("mail.sender.test", "AAAA"),
    ("mail.sender.test", "TXT"),
    ("alias.sender.test", "A"),
    ("alias.sender.test", "CNAME"),
    ("sender.test", "MX"),
    ("sender.test", "TXT"),
    ("sender.test", "A"),
    ("sel._domainkey.sender.test", "TXT"),
    ("_domainkey.sender.test", "TXT"),
    ("2.0.0.127.in-addr.arpa", "PTR"),
    ("3.0.0.127.in-addr.arpa", "PTR"),
    ("4.0.0.127.in-addr.arpa", "PTR"),
    ("5.0.0.127.bl.test", "A"),
    ("5.0.0.127.bl.test", "TXT"),
    ("6.0.0.127.bl.test", "A"),
    ("ghost.sender.test", "A"),
    ("x.mail.sender.test", "A"),
    ("example.org", "TXT"),
]


async def test_answers_match_dnsmasq(dns_server: Dnsmasq) -> None:
    real = Resolver(config.build({"dns": {"nameservers": [dns_server.address]}}).dns)
    fake = resolver(world())
    for name, rdtype in QUESTIONS:
        want, got = await real.query(name, rdtype), await fake.query(name, rdtype)
        assert (got.status, got.records, got.ttl) == (want.status, want.records, want.ttl), (
            name,
            rdtype,
        )


async def test_down_silent_and_counted() -> None:
    ns = world(ttl=60)
    r = resolver(ns, timeout=0.3)
    assert (await r.query("mail.sender.test", "A")).ttl == 60
    assert ns.asked("mail.sender.test") == 1 and ns.asked() == 1
    ns.silent = True
    silent = await r.query("other.sender.test", "A")
    assert (silent.status, silent.error) == (Status.TEMPERROR, "timeout")
    ns.silent, ns.down = False, True
    assert (await r.query("nope.test", "A")).status is Status.TEMPERROR
    ns.down = False
    assert (await r.query("nope.test", "A")).status is Status.NXDOMAIN


def test_dnsmasq_lines_it_cannot_read_are_refused() -> None:
    zone = from_dnsmasq(["host-record=a.test,b.test,127.0.0.2", "address=/c.test/::1"])
    assert sorted(zone) == ["2.0.0.127.in-addr.arpa", "a.test", "b.test", "c.test"]
    with pytest.raises(ValueError, match="srv-host"):
        from_dnsmasq(["srv-host=_x._tcp.a.test,a.test,25"])
    assert ZoneNameserver.from_dnsmasq([]).asked() == 0
