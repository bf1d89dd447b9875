"""Address-helper promises that mutation testing (scripts/mutation over policy/networks.py)
found nothing holding: a network written with host bits counts as its network; a /0 holds
every address of its family; the per-address keys of the two families never collide (IPv6
keys are negative), so an IPv4-compatible IPv6 address is never counted as the IPv4 one; nor
do the network keys, and an IPv6 network key names exactly the /ipv6_prefix network."""

from __future__ import annotations

from ipaddress import ip_address

from mailmoat.policy.networks import NetworkSet, address_key, network_key


def test_a_network_written_with_host_bits_is_its_network() -> None:
    nets = NetworkSet(["192.0.2.1/24", "2001:db8::1/64"])
    assert ip_address("192.0.2.77") in nets and ip_address("2001:db8::42") in nets
    assert ip_address("192.0.3.1") not in nets


def test_a_slash_zero_holds_every_address_of_its_family() -> None:
    v4 = NetworkSet(["0.0.0.0/0"])
    assert ip_address("203.0.113.9") in v4 and v4.longest(ip_address("203.0.113.9")) == 0
    assert ip_address("2001:db8::9") not in v4
    assert ip_address("2001:db8::9") in NetworkSet(["::/0"])


def test_address_keys_of_the_two_families_never_collide() -> None:
    v6 = ["::", "::1", "::c000:201", "::ffff:c000:201", "2001:db8::1"]
    v4 = ["0.0.0.0", "0.0.0.1", "192.0.2.1", "192.0.2.0", "255.255.255.255"]
    keys6 = {address_key(ip_address(a)) for a in v6}
    keys4 = {address_key(ip_address(a)) for a in v4}
    assert len(keys6) == len(v6) and len(keys4) == len(v4)
    assert all(k < 0 for k in keys6) and all(k >= 0 for k in keys4)


def test_network_keys_of_the_two_families_never_collide() -> None:
    v6 = [network_key(ip_address(a), 24, 64) for a in ("::", "::1:0:0:0:0", "2001:db8::1")]
    v4 = [network_key(ip_address(a), 24, 64) for a in ("0.0.0.0", "0.0.1.0", "192.0.2.1")]
    assert len(set(v6)) == 3 and all(k < 0 for k in v6) and all(k >= 0 for k in v4)
    # one key per /64: the same for two addresses in it, another for the next /64
    same = network_key(ip_address("2001:db8:0:2::1"), 24, 64)
    assert network_key(ip_address("2001:db8:0:2:ffff::9"), 24, 64) == same
    assert network_key(ip_address("2001:db8:0:3::1"), 24, 64) != same
