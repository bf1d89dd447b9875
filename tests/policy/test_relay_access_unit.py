"""Not an open relay (invariant 5) at unit level: the relay-access check alone, no sockets, no
root, no peers, so it never skips. Each case guards one way the check could be weakened by a
one-line change (a suffix or substring match, a case slip, a relay network that is too wide)."""

from __future__ import annotations

import pytest

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.policy.relay_access import RELAY_DENIED, RelayAccess
from mailmoat.smtp.events import RcptTo


def check(local: list[str], relay_networks: list[str] | None = None) -> RelayAccess:
    domains = config.build(
        {"domains": {"local": local, "relay_networks": relay_networks or []}}
    ).domains
    return RelayAccess(domains)


def rcpt(address: str) -> RcptTo:
    """The event as the engine makes it: the domain lower-cased ("" for the bare Postmaster)."""
    _, at, domain = address.rpartition("@")
    return RcptTo(address, domain.lower() if at else "")


OUTSIDER = Client("192.0.2.10", 40000)


@pytest.mark.parametrize(
    "address",
    [
        "victim@evilexample.test",  # ends with the local domain: a suffix match lets it by
        "victim@xexample.test",
        "victim@example.test.evil.test",  # starts with it: a prefix match lets it by
        "victim@sub.example.test",  # a subdomain is another domain
        "victim@example.tes",  # a part of it
        "victim@test",  # its parent
        "victim@example.test.",  # an absolute-name variant the engine does not strip
        "victim@elsewhere.test",
        "victim@[192.0.2.1]",  # an address literal
    ],
)
def test_foreign_domain_is_denied(address: str) -> None:
    assert check(["example.test"]).rcpt(OUTSIDER, rcpt(address)) == RELAY_DENIED


@pytest.mark.parametrize(
    "address", ["alice@example.test", "alice@EXAMPLE.Test", "bob@other.test", "Postmaster"]
)
def test_local_domain_and_bare_postmaster_are_accepted(address: str) -> None:
    assert check(["example.test", "other.test"]).rcpt(OUTSIDER, rcpt(address)) is None


def test_no_local_domain_means_nothing_is_local() -> None:
    assert check([]).rcpt(OUTSIDER, rcpt("alice@example.test")) == RELAY_DENIED


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("198.51.100.7", True),
        ("198.51.100.255", True),
        ("198.51.101.0", False),  # just past the /24
        ("198.51.99.255", False),  # just before it
        ("::ffff:198.51.100.7", True),  # IPv4-mapped: the same client
        ("2001:db8::1", False),
    ],
)
def test_relay_network_boundaries(client: str, allowed: bool) -> None:
    verdict = check(["example.test"], ["198.51.100.0/24"]).rcpt(
        Client(client, 1), rcpt("friend@elsewhere.test")
    )
    assert verdict == (None if allowed else RELAY_DENIED)


def test_ipv6_relay_network() -> None:
    access = check(["example.test"], ["2001:db8:1::/48"])
    assert access.rcpt(Client("2001:db8:1:ffff::1", 1), rcpt("x@elsewhere.test")) is None
    assert access.rcpt(Client("2001:db8:2::1", 1), rcpt("x@elsewhere.test")) == RELAY_DENIED


def test_relay_denied_is_a_permanent_554_5_7_1() -> None:
    assert (RELAY_DENIED.code, RELAY_DENIED.enhanced) == (554, "5.7.1")


def test_relay_network_written_with_host_bits_is_the_network() -> None:
    """The settings take "198.51.100.7/24" as 198.51.100.0/24 (strict=False); the check must
    read it the same way rather than fail to start (a survivor of scripts/mutation)."""
    access = check(["example.test"], ["198.51.100.7/24"])
    assert access.rcpt(Client("198.51.100.200", 1), rcpt("x@elsewhere.test")) is None
    assert access.rcpt(Client("198.51.101.1", 1), rcpt("x@elsewhere.test")) == RELAY_DENIED
