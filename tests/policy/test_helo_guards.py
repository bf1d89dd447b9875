"""HELO name rules pinned where mutation testing (scripts/mutation over policy/helo.py) found
nothing holding them: which names are fully qualified (two labels are enough, a numeric label is
only wrong on top, 253 octets at most), and that only a name in brackets at both ends is read as
an address literal. Each through the check itself, answering from an in-process zone."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from mailmoat import config
from mailmoat.policy.helo import HeloCheck, is_fqdn
from mailmoat.policy.score import Karma
from tests.support.fake_dns import ZoneNameserver, resolver

CLIENT = ip_address("127.0.0.2")


def _check() -> HeloCheck:
    zone = ZoneNameserver.from_dnsmasq(
        [
            "host-record=sender.test,127.0.0.2",
            "host-record=mx.1.sender.test,127.0.0.2",
            "host-record=mail.sender.test,127.0.0.2",
        ]
    )
    settings = config.build({})
    return HeloCheck(settings.helo, resolver(zone), Karma(settings.score), ["mx.mailmoat.test"])


@pytest.mark.parametrize("name", ["sender.test", "SENDER.test.", "mx.1.sender.test"])
async def test_two_labels_and_a_numeric_label_below_the_top_are_fully_qualified(
    name: str,
) -> None:
    assert is_fqdn(name)
    result = await _check().evaluate(name, CLIENT)
    assert (result.failures, result.temporary) == ([], False)


@pytest.mark.parametrize("name", ["mail.sender.123", "sender.0", "localhost"])
async def test_a_numeric_top_label_or_a_single_label_is_invalid(name: str) -> None:
    assert not is_fqdn(name)
    assert (await _check().evaluate(name, CLIENT)).failures == ["invalid"]


def test_a_name_of_253_octets_is_fully_qualified_and_one_of_254_is_not() -> None:
    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])
    assert len(name) == 253 and is_fqdn(name)
    assert not is_fqdn(name[:-1] + "dd")


@pytest.mark.parametrize("name", ["x127.0.0.2]", "[127.0.0.2x", "[127.0.0.2", "127.0.0.2]"])
async def test_only_brackets_at_both_ends_make_an_address_literal(name: str) -> None:
    """Half a literal is no literal: never the client's own address, so never a pass."""
    result = await _check().evaluate(name, CLIENT)
    assert result.failures == ["invalid"]
    assert "fully qualified" in result.reason


@pytest.mark.parametrize(
    "name", ["[127.0.0.1]", "[127.0.0.3]", "[IPv6:::1]", "[IPv6:::ffff:7f00:2]"]
)
async def test_an_address_literal_that_is_not_the_clients_is_a_mismatch(name: str) -> None:
    """Lower or higher than the client's address, or of the other family: a mismatch. (An
    IPv4-mapped IPv6 literal is not the IPv4 client either: RFC 5321 4.1.3 tags IPv6.)"""
    result = await _check().evaluate(name, CLIENT)
    assert result.failures == ["mismatch"], result


@pytest.mark.parametrize("name", ["[IPv7:::1]", "[x:::1]", "[IPv6:127.0.0.2]", "[::1]"])
async def test_only_the_ipv6_tag_makes_an_ipv6_literal(name: str) -> None:
    result = await _check().evaluate(name, CLIENT)
    assert result.failures == ["invalid"]
    assert "not a valid address literal" in result.reason
