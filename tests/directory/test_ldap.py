"""LDAP directory against a real slapd on loopback: valid, alias, unknown, directory down
(451), directory back; snapshot and lookup modes, filter escaping, bind, StartTLS."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path
from typing import Any

import pytest

from mailmoat.config import LdapSettings, build
from mailmoat.directory.base import Status
from mailmoat.directory.ldap import LdapDirectory, make_filter
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.store import MemoryStore
from tests.directory.conftest import SlapdFactory
from tests.support.gateway import running_gateway
from tests.support.slapd import SERVICE_DN, SERVICE_PW, SUFFIX, Slapd, person
from tests.support.waiting import wait_for, wait_until

VALID, UNKNOWN, UNAVAILABLE = Status.VALID, Status.UNKNOWN, Status.UNAVAILABLE


def ldap_settings(server: Slapd, **kw: Any) -> LdapSettings:
    data: dict[str, Any] = {
        "url": server.url,
        "bind_dn": SERVICE_DN,
        "bind_password": SERVICE_PW,
        "base": f"ou=people,{SUFFIX}",
        "timeout": 2.0,
        "refresh": 60.0,
        "retry": 60.0,
    }
    data.update(kw)
    return build({"ldap": data}).ldap


async def lookup(d: LdapDirectory, address: str) -> Status:
    local, _, domain = address.rpartition("@")
    result = d.lookup(local.lower(), domain.lower(), "192.0.2.1")
    return result if isinstance(result, Status) else await result


def test_filter_values_are_escaped() -> None:
    f = make_filter("(|(mail=%s)(uid=%u)(dc=%d)(x=100%%))", "a*)(uid=*", "ex(ample).test")
    assert f == (
        r"(|(mail=a\2a\29\28uid=\2a@ex\28ample\29.test)(uid=a\2a\29\28uid=\2a)"
        r"(dc=ex\28ample\29.test)(x=100%))"
    )
    # a value that looks like a placeholder is not expanded again
    assert make_filter("(mail=%s)", "%u", "d") == "(mail=%u@d)"


async def test_snapshot_valid_alias_unknown(slapd: Slapd) -> None:
    d = LdapDirectory(ldap_settings(slapd))
    await d.start()
    try:
        assert d.healthy and d.snapshot is not None
        assert await lookup(d, "alice@example.test") is VALID
        assert await lookup(d, "sales@example.test") is VALID  # alias (mailLocalAddress)
        assert await lookup(d, "info@example.test") is VALID
        assert await lookup(d, "bob@example.test") is VALID
        assert await lookup(d, "CAROL.jones@example.TEST") is VALID  # case-insensitive
        assert await lookup(d, "st*r@example.test") is VALID
        assert await lookup(d, "stuar@example.test") is UNKNOWN
        assert await lookup(d, "nobody@example.test") is UNKNOWN
        assert await lookup(d, "alice@other.test") is UNKNOWN
    finally:
        await d.close()


async def test_wrong_password_means_unavailable_never_unknown(slapd: Slapd) -> None:
    d = LdapDirectory(ldap_settings(slapd, bind_password="wrong"))
    await d.start()
    try:
        assert not d.healthy
        assert await lookup(d, "alice@example.test") is UNAVAILABLE
        assert await lookup(d, "nobody@example.test") is UNAVAILABLE
    finally:
        await d.close()


@pytest.mark.parametrize(
    "overrides",
    [
        {"bind_dn": "", "bind_password": ""},  # anonymous users may read nothing here
        {"base": f"ou=services,{SUFFIX}"},  # a base with no mail entries below it
    ],
)
async def test_a_search_that_finds_no_address_is_a_failure_not_an_empty_directory(
    slapd: Slapd, overrides: dict[str, str]
) -> None:
    d = LdapDirectory(ldap_settings(slapd, **overrides))
    await d.start()
    try:
        assert not d.healthy and d.snapshot is None
        assert await lookup(d, "alice@example.test") is UNAVAILABLE
        assert await lookup(d, "nobody@example.test") is UNAVAILABLE
    finally:
        await d.close()


async def test_snapshot_directory_down_then_back(slapd: Slapd) -> None:
    d = LdapDirectory(ldap_settings(slapd, refresh=0.2, retry=0.1, max_stale=3600))
    await d.start()
    try:
        assert await lookup(d, "nobody@example.test") is UNKNOWN
        slapd.stop()
        await wait_for(lambda: not d.healthy)
        # known addresses keep working within max_stale; others cannot be vouched for
        assert await lookup(d, "alice@example.test") is VALID
        assert await lookup(d, "sales@example.test") is VALID
        assert await lookup(d, "nobody@example.test") is UNAVAILABLE
        assert await lookup(d, "dave@example.test") is UNAVAILABLE
        slapd.start()
        await wait_for(lambda: d.healthy)
        assert await lookup(d, "nobody@example.test") is UNKNOWN
        assert await lookup(d, "dave@example.test") is UNKNOWN
        # a new user becomes valid with the next refresh
        slapd.add(person("dave", "dave@example.test"))
        refreshes = d.refreshes
        await wait_for(lambda: d.refreshes >= refreshes + 2)
        assert await lookup(d, "dave@example.test") is VALID
    finally:
        await d.close()


async def test_snapshot_too_old_vouches_for_nobody(slapd: Slapd) -> None:
    d = LdapDirectory(ldap_settings(slapd, refresh=0.2, retry=0.1, max_stale=0.5))
    await d.start()
    try:
        slapd.stop()
        await wait_for(lambda: not d.healthy)
        await asyncio.sleep(0.6)
        assert await lookup(d, "alice@example.test") is UNAVAILABLE
        assert await lookup(d, "nobody@example.test") is UNAVAILABLE
    finally:
        await d.close()


async def test_directory_down_at_start_gives_451_until_it_is_up(
    slapd_factory: SlapdFactory,
) -> None:
    slapd = slapd_factory()
    slapd.stop()
    d = LdapDirectory(ldap_settings(slapd, refresh=0.2, retry=0.1))
    await d.start()
    try:
        assert await lookup(d, "alice@example.test") is UNAVAILABLE
        slapd.start()
        await wait_for(lambda: d.healthy)
        assert await lookup(d, "alice@example.test") is VALID
    finally:
        await d.close()


async def test_snapshot_larger_than_max_entries_is_refused(slapd: Slapd) -> None:
    d = LdapDirectory(ldap_settings(slapd), max_entries=3)
    await d.start()
    try:
        assert not d.healthy and d.snapshot is None
        assert await lookup(d, "alice@example.test") is UNAVAILABLE
    finally:
        await d.close()


async def test_lookup_mode_caches_and_survives_an_outage(slapd: Slapd) -> None:
    store = MemoryStore()
    settings = ldap_settings(slapd, mode="lookup", cache_positive=600, cache_negative=600)
    d = LdapDirectory(settings, store)
    await d.start()
    try:
        assert await lookup(d, "alice@example.test") is VALID
        assert await lookup(d, "sales@example.test") is VALID
        assert await lookup(d, "nobody@example.test") is UNKNOWN
        # an unescaped '*' would match every address: escaped, it matches only itself
        assert await lookup(d, "*@example.test") is UNKNOWN
        assert await lookup(d, "st*r@example.test") is VALID
        queries = d.queries
        assert await lookup(d, "alice@example.test") is VALID
        assert await lookup(d, "nobody@example.test") is UNKNOWN
        assert d.queries == queries  # both answers came from the cache
        # concurrent lookups of one new address share one query
        results = await asyncio.gather(*(lookup(d, "bob@example.test") for _ in range(5)))
        assert results == [VALID] * 5 and d.queries == queries + 1
        slapd.stop()
        assert await lookup(d, "alice@example.test") is VALID  # cached
        assert await lookup(d, "carol.jones@example.test") is UNAVAILABLE  # never seen
        slapd.start()
        assert await lookup(d, "carol.jones@example.test") is VALID
    finally:
        await d.close()


async def test_starttls_with_the_servers_ca(slapd_factory: SlapdFactory) -> None:
    slapd = slapd_factory(tls=True)
    ok = LdapDirectory(ldap_settings(slapd, starttls=True, tls_ca_file=slapd.cert))
    unverified = LdapDirectory(ldap_settings(slapd, starttls=True))  # system CAs: must fail
    await ok.start()
    await unverified.start()
    try:
        assert ok.healthy and await lookup(ok, "alice@example.test") is VALID
        assert not unverified.healthy
        assert await lookup(unverified, "alice@example.test") is UNAVAILABLE
    finally:
        await ok.close()
        await unverified.close()


def test_gateway_refuses_unknown_and_defers_when_the_directory_is_down(
    slapd: Slapd, tmp_path: Path
) -> None:
    overrides = {
        "directory.default": "ldap",
        "ldap.url": slapd.url,
        "ldap.bind_dn": SERVICE_DN,
        "ldap.bind_password": SERVICE_PW,
        "ldap.base": SUFFIX,
        "ldap.refresh": 0.2,
        "ldap.retry": 0.1,
        "ldap.timeout": 2.0,
    }
    with running_gateway(tmp_path / "md", **overrides) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("sender@sender.test")
            assert c.rcpt("alice@example.test")[0] == 250
            assert c.rcpt("sales@example.test")[0] == 250
            code, text = c.rcpt("nobody@example.test")
            assert (code, text[:5]) == (550, b"5.1.1")
        slapd.stop()
        checks = gw.gateway.pipeline.checks if gw.gateway else []
        check = next(c for c in checks if isinstance(c, RecipientCheck))
        directory = check.directories.directories[0]
        assert isinstance(directory, LdapDirectory)
        wait_until(lambda: not directory.healthy, "the directory sees slapd gone")
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("sender@sender.test")
            assert c.rcpt("alice@example.test")[0] == 250
            code, text = c.rcpt("nobody@example.test")
            assert (code, text[:5]) == (451, b"4.4.3")
