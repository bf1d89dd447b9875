"""Admission's limits at their exact edges, without sockets: the global cap, per address, per
network, the connection rate, the allow/deny lists (the longer prefix decides, a tie denies),
only_accept_from, trusted clients, and the release of every slot at disconnect. Each limit is
checked one below and at the limit, so an off-by-one in either direction fails."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.policy.admission import Admission
from mailmoat.policy.base import Client, Decision
from mailmoat.smtp.replies import Reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def admission(clock: Clock | None = None, **dotted: Any) -> Admission:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "admission.max_rate": 0,
            "bans.strikes": 0,
            "stress.start_at": 1.0,
            "stress.stop_at": 1.0,
            **dotted,
        },
    )
    clock = clock or Clock()
    return Defences(settings, Stats(), MemoryStore(clock=clock), clock).admission


async def verdict(adm: Admission, client: Client) -> Reply | None:
    """The refusal's reply, or None when admitted (a refusal may come as a bare Reply or as a
    Decision that carries one)."""
    v = adm.connect(client)
    if inspect.isawaitable(v):
        v = await v
    if isinstance(v, Decision):
        assert v.reply is not None and not v.delay, v
        v = v.reply
    assert v is None or isinstance(v, Reply), v
    return v


def refused(v: Reply | None, text: str) -> bool:
    return isinstance(v, Reply) and v.code == 421 and v.enhanced == "4.7.0" and text in v.text


async def test_global_cap_at_exactly_max_connections() -> None:
    adm = admission(**{"admission.max_connections": 3})
    clients = [Client(f"192.0.2.{i}", 1) for i in range(1, 4)]
    for c in clients:
        assert await verdict(adm, c) is None
    assert adm.connections == 3 and adm.peak == 3
    assert refused(await verdict(adm, Client("198.51.100.1", 1)), "too many connections,")
    adm.disconnect(clients[0])
    assert adm.connections == 2 and adm.peak == 3
    assert await verdict(adm, Client("198.51.100.1", 1)) is None


async def test_per_address_at_exactly_max_per_ip() -> None:
    adm = admission(**{"admission.max_per_ip": 2})
    first, second = Client("192.0.2.9", 1), Client("192.0.2.9", 2)
    assert await verdict(adm, first) is None
    assert await verdict(adm, second) is None
    assert refused(await verdict(adm, Client("192.0.2.9", 3)), "from your address")
    assert await verdict(adm, Client("192.0.2.10", 1)) is None  # its neighbour is not held
    adm.disconnect(first)
    assert await verdict(adm, Client("192.0.2.9", 4)) is None


async def test_per_network_at_exactly_max_per_network() -> None:
    adm = admission(**{"admission.max_per_network": 2})
    a, b = Client("192.0.2.1", 1), Client("192.0.2.2", 1)
    assert await verdict(adm, a) is None
    assert await verdict(adm, b) is None
    assert refused(await verdict(adm, Client("192.0.2.3", 1)), "from your network")
    assert await verdict(adm, Client("192.0.3.1", 1)) is None  # the next /24
    adm.disconnect(b)
    assert await verdict(adm, Client("192.0.2.3", 1)) is None


async def test_every_slot_is_released_at_disconnect() -> None:
    adm = admission()
    clients = [Client("192.0.2.1", i) for i in range(5)] + [Client("2001:db8::1", 1)]
    for c in clients:
        assert await verdict(adm, c) is None
    for c in clients:
        adm.disconnect(c)
    assert adm.connections == 0 and adm.per_ip == {} and adm.per_net == {}
    adm.disconnect(clients[0])  # a second disconnect changes nothing
    assert adm.connections == 0


async def test_connection_rate_at_exactly_max_rate() -> None:
    clock = Clock()
    adm = admission(clock, **{"admission.max_rate": 3, "admission.rate_window": 60.0})
    client = Client("192.0.2.20", 1)
    for i in range(3):
        assert await verdict(adm, Client("192.0.2.20", i)) is None, i
        adm.disconnect(Client("192.0.2.20", i))
    assert refused(await verdict(adm, client), "per minute")
    # refused locally for a moment without asking the store again, then the window decides
    assert refused(await verdict(adm, client), "per minute")
    clock.now += 61
    assert await verdict(adm, client) is None


@pytest.mark.parametrize(
    ("allow", "deny", "address", "outcome"),
    [
        (["192.0.2.0/24"], ["192.0.2.0/24"], "192.0.2.1", "denied"),  # a tie denies
        (["192.0.2.0/25"], ["192.0.2.0/24"], "192.0.2.1", "trusted"),  # the longer allows
        (["192.0.2.0/24"], ["192.0.2.0/25"], "192.0.2.1", "denied"),  # the longer denies
        (["192.0.2.0/24"], ["192.0.2.0/25"], "192.0.2.200", "trusted"),
        ([], ["192.0.2.0/24"], "192.0.3.1", "admitted"),
        (["192.0.2.0/24"], [], "192.0.3.1", "admitted"),
        ([], ["0.0.0.0/0"], "203.0.113.5", "denied"),
    ],
)
async def test_allow_and_deny_lists(
    allow: list[str], deny: list[str], address: str, outcome: str
) -> None:
    adm = admission(**{"admission.allow_networks": allow, "admission.deny_networks": deny})
    client = Client(address, 1)
    v = await verdict(adm, client)
    if outcome == "denied":
        assert refused(v, "access denied")
        assert adm.connections == 0
    else:
        assert v is None
        assert client.trusted is (outcome == "trusted")
        assert adm.connections == 1


async def test_only_accept_from() -> None:
    adm = admission(
        **{"admission.allow_networks": ["10.1.0.0/16"], "admission.only_accept_from": True}
    )
    assert refused(await verdict(adm, Client("192.0.2.1", 1)), "accepts mail only from")
    assert await verdict(adm, Client("10.1.2.3", 1)) is None


async def test_trusted_clients_skip_the_limits_but_count_in_the_total() -> None:
    adm = admission(
        **{
            "admission.allow_networks": ["10.1.0.0/16"],
            "admission.max_per_ip": 1,
            "admission.max_per_network": 1,
            "admission.max_rate": 1,
        }
    )
    trusted = [Client("10.1.0.1", i) for i in range(5)]
    for c in trusted:
        assert await verdict(adm, c) is None
    assert adm.connections == 5 and adm.per_ip == {} and adm.per_net == {}
    for c in trusted:
        adm.disconnect(c)
    assert adm.connections == 0


async def test_stress_mode_lowers_the_per_address_limit() -> None:
    adm = admission(
        **{
            "admission.max_connections": 10,
            "admission.max_per_ip": 5,
            "stress.start_at": 0.1,
            "stress.stop_at": 0.1,
            "stress.max_per_ip": 2,
        }
    )
    for i in range(2):
        assert await verdict(adm, Client("192.0.2.30", i)) is None
    assert adm.stress.active
    assert refused(await verdict(adm, Client("192.0.2.30", 9)), "from your address")


async def test_trusted_connections_over_the_cap_still_hold_it_for_others() -> None:
    """Trusted upstreams are not limited but count in the total: when they alone are past
    max_connections, an ordinary client is refused (the count is above, not at, the cap)."""
    adm = admission(**{"admission.allow_networks": ["10.1.0.0/16"], "admission.max_connections": 2})
    for i in range(3):
        assert await verdict(adm, Client("10.1.0.1", i)) is None
    assert adm.connections == 3
    assert refused(await verdict(adm, Client("192.0.2.1", 1)), "too many connections,")


async def test_stress_limit_below_the_current_count_still_refuses() -> None:
    """An address holding more connections than stress.max_per_ip when stress mode starts is
    refused from then on (its count is above the new limit, not at it)."""
    adm = admission(
        **{
            "admission.max_connections": 10,
            "admission.max_per_ip": 5,
            "stress.start_at": 0.3,  # on above 3 connections
            "stress.stop_at": 0.1,
            "stress.max_per_ip": 2,
        }
    )
    for i in range(3):
        assert await verdict(adm, Client("192.0.2.40", i)) is None
    assert not adm.stress.active
    assert await verdict(adm, Client("192.0.2.41", 1)) is None  # the 4th: stress mode on
    assert adm.stress.active
    assert refused(await verdict(adm, Client("192.0.2.40", 9)), "from your address")


async def test_a_first_connection_from_a_network_is_admitted_with_a_limit_of_one() -> None:
    adm = admission(**{"admission.max_per_network": 1})
    assert await verdict(adm, Client("192.0.2.1", 1)) is None
    assert refused(await verdict(adm, Client("192.0.2.2", 1)), "from your network")
    assert await verdict(adm, Client("198.51.100.1", 1)) is None


async def test_a_release_takes_one_slot_not_the_whole_count() -> None:
    adm = admission(**{"admission.max_per_ip": 2})
    first, second = Client("192.0.2.9", 1), Client("192.0.2.9", 2)
    assert await verdict(adm, first) is None
    assert await verdict(adm, second) is None
    adm.disconnect(first)
    assert await verdict(adm, Client("192.0.2.9", 3)) is None  # back to two
    assert refused(await verdict(adm, Client("192.0.2.9", 4)), "from your address")


async def test_peak_is_the_highest_count_ever() -> None:
    adm = admission()
    clients = [Client(f"192.0.2.{i}", 1) for i in range(1, 5)]
    for c in clients:
        assert await verdict(adm, c) is None
    for c in clients[:3]:
        adm.disconnect(c)
    assert await verdict(adm, Client("198.51.100.1", 1)) is None
    assert adm.connections == 2 and adm.peak == 4


async def test_an_allow_list_of_everything_trusts_everyone() -> None:
    """0.0.0.0/0 has prefix length 0: still a match (a test or lab setup trusting all)."""
    adm = admission(**{"admission.allow_networks": ["0.0.0.0/0"]})
    client = Client("203.0.113.9", 1)
    assert await verdict(adm, client) is None
    assert client.trusted


async def test_a_ban_made_by_another_node_is_seen_without_a_rate_limit() -> None:
    """With admission.max_rate = 0 the store is still asked about bans (a shared store: the
    ban may come from another node), until a fresh "not banned" answer is cached."""
    adm = admission(**{"admission.max_rate": 0, "bans.strikes": 5})
    await adm.store.set("ban:192.0.2.80", "1", 300)
    assert refused(await verdict(adm, Client("192.0.2.80", 1)), "temporarily blocked")
    assert await verdict(adm, Client("192.0.2.81", 1)) is None
