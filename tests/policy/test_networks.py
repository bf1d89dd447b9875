"""CIDR sets, network keys and the bounded expiring cache used at accept time."""

from __future__ import annotations

from ipaddress import ip_address

from mailmoat.policy.base import Client
from mailmoat.policy.networks import ExpiringCache, NetworkSet, address_key, network_key


def test_longest_prefix_over_both_families() -> None:
    nets = NetworkSet(["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32", "192.0.2.7/32"])
    assert nets.longest(ip_address("10.1.2.3")) == 16
    assert nets.longest(ip_address("10.2.2.3")) == 8
    assert nets.longest(ip_address("192.0.2.7")) == 32
    assert nets.longest(ip_address("192.0.2.8")) == -1
    assert nets.longest(ip_address("2001:db8:1::1")) == 32
    assert ip_address("2001:db9::1") not in nets
    assert not NetworkSet() and nets


def test_network_keys_group_a_slash_24_and_a_slash_64() -> None:
    key = network_key
    assert key(ip_address("198.51.100.1"), 24, 64) == key(ip_address("198.51.100.254"), 24, 64)
    assert key(ip_address("198.51.100.1"), 24, 64) != key(ip_address("198.51.101.1"), 24, 64)
    a, b = ip_address("2001:db8:0:1::1"), ip_address("2001:db8:0:1:ffff::9")
    assert key(a, 24, 64) == key(b, 24, 64)
    assert key(a, 24, 64) != key(ip_address("2001:db8:0:2::1"), 24, 64)
    # the families never share a key
    assert address_key(ip_address("0.0.0.1")) != address_key(ip_address("::1"))


def test_ipv4_mapped_clients_count_as_ipv4() -> None:
    assert str(Client("::ffff:192.0.2.1", 25).ip) == "192.0.2.1"


def test_expiring_cache_is_bounded_and_expires() -> None:
    cache = ExpiringCache(3)
    for i in range(10):
        cache.set(i, 100.0)
    assert len(cache) == 3 and cache.live(9, 50.0) and not cache.live(0, 50.0)
    assert not cache.live(9, 100.0)  # expired at its deadline
    assert len(cache) == 2
