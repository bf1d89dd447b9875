"""The list of DNS checks (assembly._dns_checks, once policy/dns_checks.py), pinned where
mutation testing (scripts/mutation over those lines) found nothing holding it: a check is left
out only when its action is "off" (every other action runs it, "log" included), and a HELO
naming an address we listen on is forged, a wildcard or loopback listener aside."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from mailmoat import assembly
from mailmoat.assembly import Defences
from mailmoat.config import Settings
from mailmoat.policy.base import Check
from mailmoat.policy.helo import HeloCheck
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.support.gateway import gateway_settings

DNS_CHECKS = ("dnsbl", "fcrdns", "helo", "spf", "dkim")


def _settings(tmp_path: Path, **overrides: Any) -> Settings:
    return gateway_settings(
        tmp_path / "md",
        **{
            "dns.checks": True,
            "dns.nameservers": ["127.0.0.1:9"],  # never asked: nothing is looked up here
            "dnsbl.lists": ["zen.example.test"],
            "dmarc.action": "off",
            "dmarc.quarantine_action": "off",
            **overrides,
        },
    )


def _build(settings: Settings) -> list[Check]:
    store = MemoryStore()
    return assembly.build(settings, store, Defences(settings, Stats(), store))


@pytest.mark.parametrize("action", ["off", "log", "score", "tempfail", "reject"])
def test_a_dns_check_runs_under_every_action_but_off(tmp_path: Path, action: str) -> None:
    settings = _settings(tmp_path, **{f"{check}.action": action for check in DNS_CHECKS})
    names = {c.name for c in _build(settings)}
    for check in DNS_CHECKS:
        assert (check in names) == (action != "off"), (check, action, names)


async def test_a_helo_naming_an_address_we_listen_on_is_forged(tmp_path: Path) -> None:
    listen = ["192.0.2.10:25", "127.0.0.1:2525", "0.0.0.0:587"]
    settings = _settings(tmp_path, **{"server.listen": listen})
    [helo] = [c for c in _build(settings) if isinstance(c, HeloCheck)]
    client = ip_address("127.0.0.2")
    assert (await helo.evaluate("[192.0.2.10]", client)).failures == ["forged"]
    for other in ("[127.0.0.1]", "[0.0.0.0]", "[0.0.0.25]"):
        assert (await helo.evaluate(other, client)).failures == ["mismatch"], other


@pytest.mark.parametrize("which", ["dmarc.action", "dmarc.quarantine_action"])
@pytest.mark.parametrize("action", ["off", "log", "score", "tempfail", "reject"])
def test_dmarc_runs_with_spf_and_dkim_when_either_of_its_actions_is_not_off(
    tmp_path: Path, which: str, action: str
) -> None:
    """DMARC needs the SPF and DKIM results: with either DMARC action on, all three run even
    when SPF's and DKIM's own actions are off."""
    off = {f"{check}.action": "off" for check in DNS_CHECKS}
    names = {c.name for c in _build(_settings(tmp_path, **{**off, which: action}))}
    on = action != "off"
    assert {n: n in names for n in ("dmarc", "spf", "dkim")} == dict.fromkeys(
        ("dmarc", "spf", "dkim"), on
    )
