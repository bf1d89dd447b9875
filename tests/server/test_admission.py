"""Admission at accept time, end to end on loopback: each refusal path with the line the client
sees, the limits per address, per /24 and overall, rates, bans and their expiry, and trusted
upstreams. Source addresses come from 127.0.0.0/8 (socket.bind), so per-address limits are
tested with real sockets."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

from tests.support.clock import Clock
from tests.support.gateway import RunningGateway, clocked_gateway, running_gateway
from tests.support.raw_client import (
    closed,
    connect,
    read_all,
    read_line,
    read_reply,
    refused_at_connect,
)
from tests.support.waiting import DEADLINE, wait_until

HOST = b"mx.mailmoat.test"


def _greeted(port: int, src: str) -> socket.socket:
    s = connect(port, src)
    line = read_line(s)
    assert line.startswith(b"220 "), line
    return s


def _counter(gw: RunningGateway, name: str) -> int:
    assert gw.gateway is not None
    return int(gw.call(gw.gateway.stats.get, name))


def _refusal(text: bytes) -> bytes:
    return b"421 4.7.0 " + HOST + b" Error: " + text + b"\r\n"


def test_deny_list_refuses_with_421_and_closes(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admission.deny_networks": ["127.0.9.0/24"]}) as gw:
        assert refused_at_connect(gw.port, "127.0.9.7") == _refusal(b"access denied")
        with _greeted(gw.port, "127.0.8.7"):
            pass
        assert _counter(gw, "refused.denied") == 1
        assert gw.gateway is not None
        sessions = gw.gateway.sessions
        wait_until(lambda: not sessions)  # the greeted one has gone; no refused one came
        assert _counter(gw, "connections.accepted") == 2


def test_ipv4_mapped_networks_in_the_lists_match_ipv4_clients(tmp_path: Path) -> None:
    """A client is matched by its IPv4 address: a list entry written IPv4-mapped
    (::ffff:127.0.9.0/120) is the IPv4 network it means, not a silent no-op."""
    lists = {
        "admission.deny_networks": ["::ffff:127.0.9.0/120"],
        "admission.allow_networks": ["::ffff:127.0.9.8"],
    }
    with running_gateway(tmp_path / "md", **lists) as gw:
        assert gw.settings.admission.deny_networks == ["127.0.9.0/24"]
        assert refused_at_connect(gw.port, "127.0.9.7") == _refusal(b"access denied")
        with _greeted(gw.port, "127.0.9.8"):
            pass


def test_the_most_specific_network_decides(tmp_path: Path) -> None:
    lists = {
        "admission.allow_networks": ["127.0.0.0/8", "127.0.9.9/32"],
        "admission.deny_networks": ["127.0.9.0/24"],
    }
    with running_gateway(tmp_path / "md", **lists) as gw:
        assert refused_at_connect(gw.port, "127.0.9.8") == _refusal(b"access denied")
        with _greeted(gw.port, "127.0.9.9"), _greeted(gw.port, "127.0.7.1"):
            pass


def test_only_accept_from_refuses_everyone_else(tmp_path: Path) -> None:
    settings = {
        "admission.only_accept_from": True,
        "admission.allow_networks": ["127.0.3.0/24"],
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        expected = _refusal(b"this server accepts mail only from its relays")
        assert refused_at_connect(gw.port, "127.0.4.1") == expected
        with _greeted(gw.port, "127.0.3.1") as s:
            s.sendall(b"QUIT\r\n")
            assert read_line(s).startswith(b"221")
        assert _counter(gw, "refused.not_allowed") == 1


def test_global_connection_cap(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admission.max_connections": 2}) as gw:
        with _greeted(gw.port, "127.0.1.1"), _greeted(gw.port, "127.0.2.1"):
            expected = _refusal(b"too many connections, try again later")
            assert refused_at_connect(gw.port, "127.0.3.1") == expected
        # the slots come back when those clients leave
        assert gw.gateway is not None
        admission = gw.gateway.defences.admission
        wait_until(lambda: admission.connections == 0)
        with _greeted(gw.port, "127.0.3.1"):
            pass


def test_per_address_limit_and_release(tmp_path: Path) -> None:
    # (the refusal is a strike, and a struck address waits for its greeting: not here)
    settings = {"admission.max_per_ip": 2, "tarpit.suspect_delay": 0.0}
    with running_gateway(tmp_path / "md", **settings) as gw:
        a = _greeted(gw.port, "127.0.5.5")
        b = _greeted(gw.port, "127.0.5.5")
        expected = _refusal(b"too many connections from your address")
        assert refused_at_connect(gw.port, "127.0.5.5") == expected
        with _greeted(gw.port, "127.0.5.6"):  # the neighbour is not affected
            pass
        a.sendall(b"QUIT\r\n")
        assert read_line(a).startswith(b"221") and closed(a)
        a.close()
        assert gw.gateway is not None
        admission = gw.gateway.defences.admission
        wait_until(lambda: admission.connections == 1)
        with _greeted(gw.port, "127.0.5.5"):
            pass
        b.close()
        assert _counter(gw, "refused.max_per_ip") == 1


def test_per_network_limit_counts_a_whole_slash_24(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admission.max_per_network": 3}) as gw:
        held = [_greeted(gw.port, f"127.0.6.{i}") for i in (1, 2, 3)]
        expected = _refusal(b"too many connections from your network")
        assert refused_at_connect(gw.port, "127.0.6.200") == expected
        with _greeted(gw.port, "127.0.7.1"):
            pass
        for s in held:
            s.close()
        assert _counter(gw, "refused.max_per_network") == 1


def test_connection_rate_over_a_sliding_window(tmp_path: Path) -> None:
    clock = Clock()
    settings = {"admission.max_rate": 3, "admission.rate_window": 60.0, "bans.strikes": 0}
    with clocked_gateway(tmp_path / "md", clock, **settings) as gw:
        for _ in range(3):
            with _greeted(gw.port, "127.0.8.1"):
                pass
            clock.now += 10
        expected = _refusal(b"too many connections per minute from your address")
        assert refused_at_connect(gw.port, "127.0.8.1") == expected
        with _greeted(gw.port, "127.0.8.2"):
            pass
        # Attempts count, refused ones too (as Postfix's anvil counts them): 35 s on, the
        # window still holds the connections at +10, +20 and the refused one at +30.
        clock.now += 35
        assert refused_at_connect(gw.port, "127.0.8.1") == expected
        # once a whole window passes without attempts, the address is welcome again
        clock.now += 61
        with _greeted(gw.port, "127.0.8.1"):
            pass
        assert _counter(gw, "refused.rate") == 2


def test_strikes_lead_to_a_ban_that_expires_and_escalates(tmp_path: Path) -> None:
    clock = Clock()
    settings = {
        "admission.max_per_ip": 1,
        "bans.strikes": 2,
        "bans.duration": 100.0,
        "tarpit.suspect_delay": 0.0,
    }
    with clocked_gateway(tmp_path / "md", clock, **settings) as gw:
        assert gw.gateway is not None
        bans = gw.gateway.defences.bans
        held = _greeted(gw.port, "127.0.10.1")
        too_many = _refusal(b"too many connections from your address")
        for _ in range(2):
            assert refused_at_connect(gw.port, "127.0.10.1") == too_many
            clock.now += 2  # past the strike cooldown
        held.close()
        admission = gw.gateway.defences.admission
        wait_until(lambda: admission.connections == 0)
        banned = _refusal(b"your address is temporarily blocked, try again later")
        wait_until(lambda: gw.call(bans.banned_now, "127.0.10.1"))
        assert refused_at_connect(gw.port, "127.0.10.1") == banned
        with _greeted(gw.port, "127.0.10.2"):  # only that address
            pass
        clock.now += 101
        with _greeted(gw.port, "127.0.10.1"):  # the ban is over
            pass
        # a second ban, within bans.memory, lasts twice as long
        length = gw.run(bans.ban("127.0.10.1", "test"))
        assert length == 200.0
        clock.now += 150
        assert refused_at_connect(gw.port, "127.0.10.1") == banned
        clock.now += 51
        with _greeted(gw.port, "127.0.10.1"):
            pass
        assert _counter(gw, "bans") == 2 and _counter(gw, "refused.banned") == 2


def test_a_session_closed_for_errors_is_a_strike(tmp_path: Path) -> None:
    settings = {"smtp.max_errors": 1, "bans.strikes": 1, "tarpit.suspect_delay": 0.0}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with _greeted(gw.port, "127.0.11.1") as s:
            s.sendall(b"MAIL FROM:<a@b.test>\r\n")
            got = read_all(s)
        assert b"503 5.5.1" in got and b"421 4.7.0 Error: too many errors" in got
        wait_until(lambda: _counter(gw, "bans") == 1)
        banned = _refusal(b"your address is temporarily blocked, try again later")
        assert refused_at_connect(gw.port, "127.0.11.1") == banned


def test_trusted_upstream_is_exempt_from_limits_and_bans(tmp_path: Path) -> None:
    settings = {
        "admission.allow_networks": ["127.0.12.0/24"],
        "admission.max_per_ip": 1,
        "admission.max_rate": 2,
        "bans.strikes": 1,
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        held = [_greeted(gw.port, "127.0.12.1") for _ in range(5)]
        assert gw.gateway is not None
        gw.call(gw.gateway.defences.bans.strike, "127.0.12.1", "test")
        with _greeted(gw.port, "127.0.12.1") as s:
            s.sendall(b"EHLO relay.test\r\n")
            assert read_reply(s).startswith(b"250-")
        for s in held:
            s.close()
        # an ordinary neighbour outside the allow list is still limited
        with _greeted(gw.port, "127.0.13.1"):
            assert refused_at_connect(gw.port, "127.0.13.1").startswith(b"421 4.7.0")


def test_refusal_needs_no_session_state(tmp_path: Path) -> None:
    """A flood of refused connections leaves nothing behind: no session, no counted slot."""
    with running_gateway(tmp_path / "md", **{"admission.deny_networks": ["127.0.14.0/24"]}) as gw:
        socks = []
        for i in range(50):
            with contextlib.suppress(OSError):
                socks.append(connect(gw.port, f"127.0.14.{i % 10 + 1}"))
        for s in socks:
            assert read_all(s).startswith(b"421 4.7.0")
            s.close()
        assert gw.gateway is not None
        assert not gw.gateway.sessions
        assert gw.gateway.defences.admission.connections == 0
        assert _counter(gw, "refused.denied") == len(socks)


def test_ipv6_listener_applies_the_lists(tmp_path: Path) -> None:
    settings = {"server.listen": ["[::1]:0"], "admission.deny_networks": ["::1/128"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with socket.create_connection(("::1", gw.port), timeout=DEADLINE) as s:
            assert read_all(s) == _refusal(b"access denied")
