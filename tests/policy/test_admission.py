"""Admission without sockets where sockets cannot reach (other IPv6 addresses than ::1): the
/64 aggregate, IPv6 lists; and the synchronous verdict for every local refusal."""

from __future__ import annotations

import inspect
import time

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.policy.base import Client, Decision
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore


def _admission(**overrides: object) -> Defences:
    settings = config.load(None, {"server.hostname": "mx.test", **overrides})
    stats = Stats()
    return Defences(settings, stats, MemoryStore(), time.monotonic)


def _sync(verdict: object) -> object:
    assert not inspect.isawaitable(verdict), "a local refusal must not wait"
    return verdict


async def test_ipv6_clients_are_grouped_by_slash_64() -> None:
    d = _admission(**{"admission.max_per_network": 2, "admission.max_rate": 0, "bans.strikes": 0})
    adm = d.admission
    assert _sync(adm.connect(Client("2001:db8:0:1::1", 1))) is None
    assert _sync(adm.connect(Client("2001:db8:0:1::2", 1))) is None
    refused = _sync(adm.connect(Client("2001:db8:0:1:abcd::3", 1)))
    assert isinstance(refused, Decision) and refused.reason == "max_per_network"
    assert refused.reply is not None and refused.reply.code == 421
    assert "network" in refused.reply.text
    assert _sync(adm.connect(Client("2001:db8:0:2::1", 1))) is None
    adm.disconnect(Client("2001:db8:0:1::9", 1))  # never counted: changes nothing
    assert adm.connections == 3


async def test_ipv6_deny_list_and_per_address_counts() -> None:
    d = _admission(**{"admission.deny_networks": ["2001:db8:bad::/48"], "admission.max_per_ip": 1})
    refused = _sync(d.admission.connect(Client("2001:db8:bad:1::1", 1)))
    assert isinstance(refused, Decision) and refused.reason == "denied"
    assert refused.reply is not None and "access denied" in refused.reply.text
    first = Client("2001:db8::1", 1)
    verdict = d.admission.connect(first)
    assert inspect.isawaitable(verdict)  # admitted: the rate and ban checks ask the store
    assert await verdict is None
    refused = _sync(d.admission.connect(Client("2001:db8::1", 2)))
    assert isinstance(refused, Decision) and refused.reason == "max_per_ip"
    assert refused.reply is not None and "from your address" in refused.reply.text
    d.admission.disconnect(first)
    assert d.admission.connections == 0 and not d.admission.per_ip and not d.admission.per_net
