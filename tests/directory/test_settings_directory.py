"""The directory back ends' settings no other test exercised, each by its effect: LDAP against
the real slapd (password file, filters, attributes, connections, certificate checking), the
call-ahead probe's sender, and the downstream EHLO name (relay.helo_name), which the probes
and deliveries share."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.directory.base import Status
from mailmoat.directory.callahead import CallAheadDirectory
from mailmoat.directory.ldap import LdapDirectory
from mailmoat.store import MemoryStore
from tests.directory.conftest import SlapdFactory
from tests.directory.test_callahead import ask, refuse_unknown
from tests.directory.test_ldap import lookup
from tests.relay.relay_support import FakeFactory
from tests.support.slapd import SERVICE_DN, SERVICE_PW, SUFFIX, Slapd

VALID, UNKNOWN, UNAVAILABLE = Status.VALID, Status.UNKNOWN, Status.UNAVAILABLE


def ldap(server: Slapd, **dotted: Any) -> config.LdapSettings:
    """LDAP settings from dotted keys, as an administrator writes them."""
    return config.load(
        None,
        {
            "ldap.url": server.url,
            "ldap.bind_dn": SERVICE_DN,
            "ldap.bind_password": SERVICE_PW,
            "ldap.base": f"ou=people,{SUFFIX}",
            "ldap.timeout": 2.0,
            "ldap.refresh": 60.0,
            "ldap.retry": 60.0,
            **dotted,
        },
    ).ldap


async def statuses(settings: config.LdapSettings, *addresses: str) -> list[Status]:
    d = LdapDirectory(settings, MemoryStore())
    await d.start()
    try:
        return [await lookup(d, a) for a in addresses]
    finally:
        await d.close()


@pytest.mark.parametrize(("content", "healthy"), [(SERVICE_PW + "\n", True), ("wrong\n", False)])
async def test_ldap_bind_password_file(
    slapd: Slapd, tmp_path: Path, content: str, healthy: bool
) -> None:
    """The first line of the file is the password; bind_password is not used then."""
    secret = tmp_path / "ldap.secret"
    secret.write_text(content + "a second line is ignored\n")
    settings = ldap(
        slapd, **{"ldap.bind_password": "not-this-one", "ldap.bind_password_file": str(secret)}
    )
    expected = VALID if healthy else UNAVAILABLE
    assert await statuses(settings, "alice@example.test") == [expected]


async def test_ldap_filter_in_lookup_mode(slapd: Slapd) -> None:
    """The default filter finds mail and mailLocalAddress; "(uid=%u)" finds the uid instead."""
    people = ("alice@example.test", "sales@example.test", "star@example.test")
    default = await statuses(ldap(slapd, **{"ldap.mode": "lookup"}), *people)
    assert default == [VALID, VALID, UNKNOWN]
    by_uid = ldap(slapd, **{"ldap.mode": "lookup", "ldap.filter": "(uid=%u)"})
    assert await statuses(by_uid, *people) == [VALID, UNKNOWN, VALID]


async def test_ldap_snapshot_filter(slapd: Slapd) -> None:
    people = ("alice@example.test", "sales@example.test", "bob@example.test")
    assert await statuses(ldap(slapd), *people) == [VALID, VALID, VALID]
    only_alice = ldap(slapd, **{"ldap.snapshot_filter": "(uid=alice)"})
    assert await statuses(only_alice, *people) == [VALID, VALID, UNKNOWN]


async def test_ldap_address_and_alias_attributes(slapd: Slapd) -> None:
    """The attributes a snapshot reads addresses from (lookup mode asks the filter only)."""
    people = ("alice@example.test", "sales@example.test")
    no_alias = ldap(slapd, **{"ldap.alias_attributes": []})
    assert await statuses(no_alias, *people) == [VALID, UNKNOWN]
    aliases_only = ldap(
        slapd,
        **{
            "ldap.address_attributes": ["mailLocalAddress"],
            "ldap.alias_attributes": [],
            "ldap.snapshot_filter": "(mailLocalAddress=*)",
        },
    )
    assert await statuses(aliases_only, *people) == [UNKNOWN, VALID]


@pytest.mark.parametrize("connections", [1, 3])
async def test_ldap_connections(slapd: Slapd, connections: int) -> None:
    """lookup mode: at most ldap.connections queries (threads, each with its own connection)
    at once, however many lookups wait."""
    before = {t.ident for t in threading.enumerate()}  # another directory's may still be ending
    settings = ldap(slapd, **{"ldap.mode": "lookup", "ldap.connections": connections})
    d = LdapDirectory(settings, MemoryStore())
    await d.start()
    seen: set[str] = set()
    try:
        addresses = [f"nobody{i}@example.test" for i in range(12)] + ["alice@example.test"]
        results = await asyncio.gather(*(lookup(d, a) for a in addresses))
        seen |= {
            t.name
            for t in threading.enumerate()
            if t.name.startswith("ldap") and t.ident not in before
        }
        assert results == [UNKNOWN] * 12 + [VALID]
        assert d._pool._max_workers == connections
        assert 1 <= len(d._connections) <= connections
    finally:
        await d.close()
    assert 1 <= len(seen) <= connections, seen


@pytest.mark.parametrize(("verify", "healthy"), [(False, True), (True, False)])
async def test_ldap_tls_verify(slapd_factory: SlapdFactory, verify: bool, healthy: bool) -> None:
    """StartTLS to a server whose certificate no trusted CA signed: refused when verifying,
    accepted (encrypted, unauthenticated) with ldap.tls_verify = false."""
    slapd = slapd_factory(tls=True)
    settings = ldap(slapd, **{"ldap.starttls": True, "ldap.tls_verify": verify})
    expected = VALID if healthy else UNAVAILABLE
    assert await statuses(settings, "alice@example.test") == [expected]


@pytest.mark.parametrize(("sender", "line"), [("", b"MAIL FROM:<>"), ("probe@mx.test", None)])
async def test_callahead_sender(
    fake_downstream: FakeFactory, sender: str, line: bytes | None
) -> None:
    fake = await fake_downstream(rcpt=refuse_unknown)
    settings = config.load(
        None,
        {
            "domains.local": ["example.test"],
            "relay.downstream": f"127.0.0.1:{fake.port}",
            "directory.default": "callahead",
            "callahead.sender": sender,
            "callahead.timeout": 5.0,
        },
    )
    d = CallAheadDirectory(settings, MemoryStore())
    try:
        assert await ask(d, "alice@example.test") is VALID
    finally:
        await d.close()
    mail = [x for x in fake.lines if x.upper().startswith(b"MAIL FROM:")]
    assert mail == [line or f"MAIL FROM:<{sender}>".encode()]


@pytest.mark.parametrize(
    ("name", "ehlo"), [(None, b"EHLO mx.mailmoat.test"), ("relay.mx.test", None)]
)
async def test_relay_helo_name(
    fake_downstream: FakeFactory, name: str | None, ehlo: bytes | None
) -> None:
    """The name mailmoat gives downstream in EHLO: server.hostname unless relay.helo_name."""
    fake = await fake_downstream(rcpt=refuse_unknown)
    overrides: dict[str, Any] = {
        "server.hostname": "mx.mailmoat.test",
        "domains.local": ["example.test"],
        "relay.downstream": f"127.0.0.1:{fake.port}",
        "directory.default": "callahead",
    }
    if name is not None:
        overrides["relay.helo_name"] = name
    d = CallAheadDirectory(config.load(None, overrides), MemoryStore())
    try:
        assert await ask(d, "alice@example.test") is VALID
    finally:
        await d.close()
    assert fake.lines[0] == (ehlo or f"EHLO {name}".encode())
