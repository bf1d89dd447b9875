"""The postscreen syntax of DNS lists: zones, reply filters, weights, query names."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from mailmoat import config
from mailmoat.dns.lists import parse_list


def test_zone_filter_and_weight() -> None:
    dl = parse_list("bl.example=127.0.0.[2..11;20]*3")
    assert (dl.zone, dl.weight) == ("bl.example", 3)
    assert dl.matches("127.0.0.2") and dl.matches("127.0.0.11") and dl.matches("127.0.0.20")
    assert not dl.matches("127.0.0.12") and not dl.matches("127.0.1.2")
    assert not dl.matches("not an address")
    plain = parse_list("Bl.Example.")
    assert (plain.zone, plain.weight, plain.filter) == ("bl.example", 1, None)
    assert plain.matches("127.255.255.254")
    allow = parse_list("wl.example=127.0.[0..255].[1..3]*-2")
    assert allow.weight == -2 and allow.matches("127.0.9.3") and not allow.matches("127.0.9.4")


def test_query_names() -> None:
    dl = parse_list("bl.example")
    assert dl.query_name(ip_address("192.0.2.1")) == "1.2.0.192.bl.example"
    assert dl.query_name(ip_address("::ffff:192.0.2.1")) == "1.2.0.192.bl.example"
    v6 = dl.query_name(ip_address("2001:db8::1"))
    assert v6 == "1." + "0." * 23 + "8.b.d.0.1.0.0.2.bl.example"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "nodot",
        "bl.example*x",
        "bl.example*0",
        "bl.example=127.0.0",
        "bl.example=127.0.0.[1..300]",
        "bl.example=127.0.0.[x]",
        "bad zone.example",
    ],
)
def test_bad_lists_are_refused_by_the_settings(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_list(bad)
    with pytest.raises(config.ConfigError):
        config.build({"dnsbl": {"lists": [bad]}})
