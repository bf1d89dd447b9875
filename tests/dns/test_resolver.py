"""The DNS layer against a real dnsmasq: answers by type, NXDOMAIN and NODATA, a cache that
honours TTLs and stays bounded, one query for identical lookups in flight, configured servers
with ports, and every failure (timeout, server down, REFUSED, no configuration) a temporary
error that is not cached."""

from __future__ import annotations

import asyncio
import time

from mailmoat import config
from mailmoat.dns import Resolver, Status
from tests.support import dns_zone as zone
from tests.support.dns_fixtures import DnsmasqFactory
from tests.support.dnsmasq import Dnsmasq, SilentServer
from tests.support.ports import free_udp_port
from tests.support.waiting import wait_for


def resolver(*servers: str, clock=time.monotonic, **dns: object) -> Resolver:
    settings = config.build({"dns": {"nameservers": list(servers), **dns}}).dns
    return Resolver(settings, clock=clock)


async def test_answers_by_type(dns_server: Dnsmasq) -> None:
    r = resolver(dns_server.address)
    a = await r.query("Mail.Sender.Test.", "A")
    assert a.status is Status.OK and a.records == (zone.GOOD_IP,) and a.ttl == 300
    ptr = await r.ptr(zone.GOOD_IP)
    assert ptr.records == ("mail.sender.test",)
    mx = await r.query("sender.test", "MX")
    assert mx.records == ((10, "mail.sender.test"),)
    txt = await r.query("sender.test", "TXT")
    assert txt.records == (b"v=spf1 mx include:_spf.sender.test -all",)
    cname = await r.query("alias.sender.test", "A")
    assert cname.records == (zone.GOOD_IP,)


async def test_long_txt_record_is_joined(dns_server: Dnsmasq) -> None:
    """A 2048-bit DKIM key does not fit one 255-octet string; the strings come back joined."""
    txt = await resolver(dns_server.address).query("sel._domainkey.sender.test", "TXT")
    assert txt.records == (f"v=DKIM1; k=rsa; p={zone.dkim_keys().public_b64}".encode(),)
    assert len(txt.records[0]) > 255


async def test_nxdomain_and_nodata_are_answers_not_errors(dns_server: Dnsmasq) -> None:
    r = resolver(dns_server.address)
    assert (await r.query("ghost.sender.test", "A")).status is Status.NXDOMAIN
    assert (await r.query("mail.sender.test", "AAAA")).status is Status.NODATA
    both = await r.addresses("mail.sender.test")
    assert both.status is Status.OK and both.records == (zone.GOOD_IP,)
    assert (await r.addresses("ghost.sender.test")).status is Status.NXDOMAIN
    assert (await r.ptr(zone.NOPTR_IP)).status is Status.NXDOMAIN


async def test_cache_answers_until_the_ttl_runs_out(dns_server: Dnsmasq) -> None:
    now = [1000.0]
    r = resolver(dns_server.address, clock=lambda: now[0])
    before = dns_server.queries("_spf.sender.test")
    first = await r.query("_spf.sender.test", "TXT")
    assert await r.query("_spf.sender.test", "TXT") == first
    assert dns_server.queries("_spf.sender.test") == before + 1
    assert (r.stats.queries, r.stats.hits) == (1, 1)
    now[0] += 299  # TTL 300
    await r.query("_spf.sender.test", "TXT")
    assert r.stats.queries == 1
    now[0] += 2
    await r.query("_spf.sender.test", "TXT")
    assert r.stats.queries == 2
    assert dns_server.queries("_spf.sender.test") == before + 2


async def test_max_ttl_caps_and_negative_answers_are_cached(dns_server: Dnsmasq) -> None:
    now = [0.0]
    r = resolver(dns_server.address, clock=lambda: now[0], max_ttl=10, negative_ttl=5)
    assert (await r.query("soft.test", "TXT")).ttl == 10
    nx = await r.query("ghost.sender.test", "A")
    assert nx.status is Status.NXDOMAIN and nx.ttl == 5
    await r.query("ghost.sender.test", "A")
    assert r.stats.queries == 2
    now[0] = 6
    await r.query("ghost.sender.test", "A")
    await r.query("soft.test", "TXT")
    assert r.stats.queries == 3
    now[0] = 11
    await r.query("soft.test", "TXT")
    assert r.stats.queries == 4


async def test_ttl_zero_is_not_cached(dnsmasq_factory: DnsmasqFactory) -> None:
    server = dnsmasq_factory(ttl=0)
    r = resolver(server.address)
    for _ in range(3):
        assert (await r.query("mail.sender.test", "A")).records == (zone.GOOD_IP,)
    assert r.stats.queries == 3 and len(r) == 0


async def test_cache_is_bounded_least_recently_used_first(dns_server: Dnsmasq) -> None:
    r = resolver(dns_server.address, cache_size=2)
    await r.query("sender.test", "TXT")
    await r.query("soft.test", "TXT")
    await r.query("sender.test", "TXT")  # a hit: sender.test is now the most recent
    await r.query("strict.test", "TXT")  # evicts soft.test
    assert len(r) == 2
    queries = r.stats.queries
    await r.query("sender.test", "TXT")
    assert r.stats.queries == queries
    await r.query("soft.test", "TXT")
    assert r.stats.queries == queries + 1


async def test_identical_lookups_in_flight_share_one_query(dns_server: Dnsmasq) -> None:
    r = resolver(dns_server.address)
    before = dns_server.queries("strict.test")
    answers = await asyncio.gather(*(r.query("strict.test", "TXT") for _ in range(20)))
    assert len(set(answers)) == 1 and answers[0].status is Status.OK
    assert (r.stats.queries, r.stats.joined) == (1, 19)
    assert dns_server.queries("strict.test") == before + 1


async def test_a_caller_giving_up_does_not_cancel_the_shared_query(
    silent_dns: SilentServer,
) -> None:
    r = resolver(silent_dns.address, timeout=0.6)
    first = asyncio.ensure_future(r.query("mail.sender.test", "A"))
    second = asyncio.ensure_future(r.query("mail.sender.test", "A"))
    await asyncio.sleep(0.1)
    first.cancel()
    answer = await second
    assert answer.status is Status.TEMPERROR


async def test_timeout_is_a_temporary_error_and_not_cached(silent_dns: SilentServer) -> None:
    r = resolver(silent_dns.address, timeout=0.5)
    started = time.monotonic()
    answer = await r.query("mail.sender.test", "A")
    assert answer.status is Status.TEMPERROR and answer.temporary
    assert "timeout" in answer.error
    assert time.monotonic() - started >= 0.5 - 0.01  # it waited dns.timeout for an answer
    await r.query("mail.sender.test", "A")
    assert r.stats.queries == 2 and r.stats.temperrors == 2 and len(r) == 0
    await wait_for(lambda: silent_dns.received >= 2, "both queries at the server")


async def test_server_down_then_back(dnsmasq_factory: DnsmasqFactory) -> None:
    server = dnsmasq_factory()
    r = resolver(server.address, timeout=1)
    server.stop()
    down = await r.query("mail.sender.test", "A")
    assert down.status is Status.TEMPERROR
    server.start()
    up = await r.query("mail.sender.test", "A")
    assert up.status is Status.OK and up.records == (zone.GOOD_IP,)


async def test_closed_port_is_a_temporary_error() -> None:
    r = resolver(f"127.0.0.1:{free_udp_port()}", timeout=1)
    assert (await r.query("mail.sender.test", "A")).status is Status.TEMPERROR


async def test_refused_is_a_temporary_error(dns_server: Dnsmasq) -> None:
    """dnsmasq refuses names outside its zones (it has no upstream): REFUSED is no answer."""
    answer = await resolver(dns_server.address).query("example.org", "A")
    assert answer.status is Status.TEMPERROR


async def test_a_silent_first_server_falls_over_to_the_second(
    silent_dns: SilentServer, dns_server: Dnsmasq
) -> None:
    r = resolver(silent_dns.address, dns_server.address, timeout=2)
    answer = await r.query("mail.sender.test", "A")
    assert answer.status is Status.OK and answer.records == (zone.GOOD_IP,)


async def test_no_configuration_is_a_temporary_error() -> None:
    """The test session points the system configuration at a missing file (tests/conftest.py)."""
    r = Resolver(config.build({}).dns)
    answer = await r.query("mail.sender.test", "A")
    assert answer.status is Status.TEMPERROR and "no name servers" in answer.error


async def test_invalid_names_are_not_sent() -> None:
    r = resolver("127.0.0.1:9")
    answer = await r.query("x" * 64 + ".test", "A")
    assert answer.status is Status.NXDOMAIN and r.stats.queries == 0


def test_nameserver_settings_are_checked() -> None:
    import pytest

    for bad in ("localhost", "127.0.0.1:99999", "[::1]"):
        with pytest.raises(config.ConfigError):
            config.build({"dns": {"nameservers": [bad]}})
    ok = config.build({"dns": {"nameservers": ["127.0.0.1", "[::1]:5353", "::1"]}})
    assert config.dns_server(ok.dns.nameservers[1]) == ("::1", 5353)
    assert config.dns_server(ok.dns.nameservers[2]) == ("::1", 53)
