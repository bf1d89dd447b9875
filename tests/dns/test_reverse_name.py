"""reverse_name gives exactly dnspython's in-addr.arpa / ip6.arpa names (how much cheaper it
is: `python -m bench reverse_name`, not a timed test here)."""

from __future__ import annotations

import ipaddress

import dns.reversename
import pytest

from mailmoat.dns import reverse_name

ADDRESSES = [
    "192.0.2.1",
    "127.0.0.1",
    "0.0.0.0",
    "255.255.255.255",
    "2001:db8::1",
    "::1",
    "fe80::1:2:3:4",
    "::ffff:192.0.2.7",
    "2001:db8:0:1:ffff:ffff:ffff:ffff",
]


@pytest.mark.parametrize("address", ADDRESSES)
def test_same_name_as_dnspython(address: str) -> None:
    expected = dns.reversename.from_address(address).to_text(omit_final_dot=True)
    assert reverse_name(address) == expected
    assert reverse_name(ipaddress.ip_address(address)) == expected
