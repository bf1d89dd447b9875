"""The JSON that mailmoat gives nftables and the keys it reads bans from (no kernel needed):
which store keys are bans, the rate meter's limit for admission.max_rate, the batch's
commands, and a bad table name refused by the settings."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmoat import config
from mailmoat.config.settings import ConfigError
from mailmoat.packetfilter.filter import ban_target
from mailmoat.packetfilter.nftables import rate_limit, update


@pytest.mark.parametrize(
    ("key", "target"),
    [
        ("ban:192.0.2.1", "192.0.2.1/32"),
        ("ban:2001:db8::1", "2001:db8::1/128"),
        ("ban:net:198.51.100.0/24", "198.51.100.0/24"),
        ("ban:dha:ip:192.0.2.9", "192.0.2.9/32"),
        ("ban:dha:net:2001:db8::/48", "2001:db8::/48"),
        ("ban:::ffff:192.0.2.3", "192.0.2.3/32"),  # an IPv4 client's packets are IPv4
        ("ban:net:::ffff:198.51.0.0/112", "198.51.0.0/16"),  # so are a mapped network's
        ("ban:dha:net:::ffff:203.0.113.0/120", "203.0.113.0/24"),
    ],
)
def test_ban_keys_name_their_target(key: str, target: str) -> None:
    assert ban_target(key) == ip_network(target)


@pytest.mark.parametrize(
    "key",
    [
        "bans:192.0.2.1",  # an escalation counter, not a ban
        "strikes:192.0.2.1",
        "ban:",
        "ban:net:",
        "ban:dha:ip:not-an-address",
        "ban:999.1.1.1",
        "ban:192.0.2.1/33",
        "ban:net:192.0.2.0/24\x00",
        "rate:ip:192.0.2.1",
    ],
)
def test_other_and_malformed_keys_are_no_ban(key: str) -> None:
    assert ban_target(key) is None


@given(st.text(max_size=80))
def test_any_key_is_a_network_or_none(rest: str) -> None:
    for key in (rest, "ban:" + rest, "ban:net:" + rest, "ban:dha:ip:" + rest):
        net = ban_target(key)
        assert net is None or net == ip_network(str(net), strict=True)


@pytest.mark.parametrize(
    ("max_rate", "window", "rate", "per"),
    [
        (60, 60.0, 1, "second"),
        (5, 60.0, 5, "minute"),
        (7, 3600.0, 7, "hour"),
        (10, 1.0, 10, "second"),
    ],
)
def test_the_meter_matches_admission_max_rate(
    max_rate: int, window: float, rate: int, per: str
) -> None:
    limit = rate_limit(max_rate, window)["limit"]
    assert (limit["rate"], limit["per"], limit["burst"], limit["inv"]) == (
        rate, per, max_rate, True,
    )  # fmt: skip


def test_a_batch_is_three_commands_per_set_whatever_its_size() -> None:
    lift = [ip_network("192.0.2.1")]
    put = [(ip_network(f"10.0.{i // 256}.{i % 256}"), 30.2) for i in range(1000)]
    put.append((ip_network("2001:db8::/48"), 5))
    cmds = update("t", lift, put)
    assert [next(iter(c)) for c in cmds] == ["add", "add", "delete", "delete", "add", "add"]
    adds = {c["add"]["element"]["name"]: c["add"]["element"]["elem"] for c in cmds[4:]}
    assert len(adds["addr4"]) == 1000 and adds["addr4"][0]["elem"]["timeout"] == 31
    assert adds["net6"] == [
        {"elem": {"val": {"prefix": {"addr": "2001:db8::", "len": 48}}, "timeout": 5}}
    ]
    assert all(c[next(iter(c))]["element"]["table"] == "t" for c in cmds)


@pytest.mark.parametrize("name", ["", "1abc", "a b", "a;flush ruleset", "x" * 33])
def test_a_bad_table_name_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^packetfilter\.table: "):
        config.load(None, {"packetfilter.table": name})


def test_packet_filter_settings_wait_for_a_restart() -> None:
    from mailmoat.server.reload import needs_restart

    assert needs_restart("packetfilter.backend") and needs_restart("packetfilter.rate_meter")
