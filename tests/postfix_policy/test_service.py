"""The policy service on the gateway's state, driven as Postfix's smtpd drives it."""

from __future__ import annotations

import os
import smtplib
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat.config import ConfigError
from mailmoat.config_checks import setting_problems
from mailmoat.postfix_policy.answers import DEFER_TIMEOUT
from mailmoat.server.admin import request
from tests.support.gateway import RunningGateway, gateway_settings, running_gateway
from tests.support.policy_client import PolicyClient
from tests.support.ports import free_port
from tests.support.waiting import wait_until

UNKNOWN = "550 5.1.1 no such user"  # Postfix says "Recipient address rejected:" itself


def policy_settings(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    users = tmp_path / "users"
    users.write_text("alice@example.test\nbob@example.test\n")
    return {
        "server.listen": [],
        "policy.listen": f"127.0.0.1:{free_port()}",
        "directory.default": "static",
        "directory.static_file": str(users),
        "harvest.tarpit_after": 3,
        "harvest.threshold": 3,
        "harvest.ban_after": 3,
        **overrides,
    }


@pytest.fixture
def policy(tmp_path: Path) -> Iterator[tuple[RunningGateway, tuple[str, int]]]:
    overrides = policy_settings(tmp_path)
    with running_gateway(tmp_path / "Maildir", **overrides) as gw:
        host, port = overrides["policy.listen"].split(":")
        yield gw, (host, int(port))


def test_only_side_services_listen(policy: tuple[RunningGateway, tuple[str, int]]) -> None:
    gw, address = policy
    assert gw.port == 0 and gw.gateway is not None and not gw.gateway.servers
    with PolicyClient(address) as client:
        assert client.ask("RCPT", recipient="alice@example.test") == "DUNNO"


def test_only_side_services_healthy_and_nothing_delivered(tmp_path: Path) -> None:
    """With server.listen = [] the health check asks for the side services, not for a
    listener or a Maildir; the Maildir, never used, is not made."""
    admin = str(tmp_path / "admin.sock")
    overrides = policy_settings(tmp_path, **{"admin.listen": admin})
    with running_gateway(tmp_path / "Maildir", **overrides):
        status, body = request(admin, "/healthz")
        assert (status, body.strip()) == (200, b"ok")
    assert not (tmp_path / "Maildir").exists()


def test_known_unknown_and_relay(policy: tuple[RunningGateway, tuple[str, int]]) -> None:
    _, address = policy
    with PolicyClient(address) as client:
        assert client.ask("RCPT", recipient="bob@example.test") == "DUNNO"
        assert client.ask("RCPT", recipient="nobody@example.test") == UNKNOWN
        assert client.ask("RCPT", recipient="x@elsewhere.test").startswith("554 5.7.1")
        assert client.ask("RCPT", recipient="postmaster") == "DUNNO"
        assert client.ask("VRFY", recipient="nobody@example.test") == UNKNOWN
        # the other stages have nothing to refuse for a clean client
        for state in ("CONNECT", "EHLO", "MAIL", "DATA", "END-OF-MESSAGE", "ETRN"):
            assert client.ask(state) == "DUNNO"


def test_unknown_recipients_ban_the_client_for_everyone(
    policy: tuple[RunningGateway, tuple[str, int]],
) -> None:
    """Harvest scores are the gateway's: three unknown recipients (harvest.ban_after) ban the
    address, and a new session of it is refused at once; another address is not."""
    gw, address = policy
    with PolicyClient(address) as client:
        for i in range(3):
            assert client.ask("RCPT", recipient=f"guess{i}@example.test") == UNKNOWN
    assert gw.gateway is not None
    assert gw.run(gw.gateway.store.get("ban:dha:ip:192.0.2.7")) is not None
    with PolicyClient(address) as client:
        refused = client.ask("RCPT", client_port="40001", recipient="alice@example.test")
        assert refused.startswith("421 4.7.0")
        assert client.ask("RCPT", client_address="192.0.2.8") == "DUNNO"


def test_denied_network_and_manual_ban(tmp_path: Path) -> None:
    overrides = policy_settings(tmp_path, **{"admission.deny_networks": ["198.51.100.0/24"]})
    host, port = overrides["policy.listen"].split(":")
    with (
        running_gateway(tmp_path / "Maildir", **overrides) as gw,
        PolicyClient((host, int(port))) as client,
    ):
        assert client.ask(client_address="198.51.100.9").startswith("421 4.7.0")
        assert gw.gateway is not None
        gw.run(gw.gateway.defences.bans.ban_manually("203.0.113.5", 600))
        assert client.ask(client_address="203.0.113.5", client_port="1").startswith("421 4.7.0")
        assert client.ask(client_address="203.0.113.6") == "DUNNO"


def test_connection_rate_counts_sessions_not_requests(tmp_path: Path) -> None:
    """admission.max_rate counts Postfix's SMTP sessions (client_port): one session asks for
    many recipients without being limited; the third session in the window is refused."""
    overrides = policy_settings(tmp_path, **{"admission.max_rate": 2})
    host, port = overrides["policy.listen"].split(":")
    with (
        running_gateway(tmp_path / "Maildir", **overrides),
        PolicyClient((host, int(port))) as client,
    ):
        for _ in range(5):
            assert client.ask(client_port="1000") == "DUNNO"
        assert client.ask(client_port="1001") == "DUNNO"
        assert client.ask(client_port="1002").startswith("421 4.7.0")
        # a CONNECT request starts a new session on the same port: counted, and refused
        assert client.ask("CONNECT", client_port="1000").startswith("421 4.7.0")
        assert client.ask("RCPT", client_port="1000").startswith("421 4.7.0")


def test_malformed_input_closes_only_that_connection(
    policy: tuple[RunningGateway, tuple[str, int]],
) -> None:
    gw, address = policy
    assert gw.gateway is not None
    with PolicyClient(address) as good:
        assert good.ask() == "DUNNO"
        for bad in (
            b"this is not a policy request\n\n",
            b"request=smtpd_access_policy\n" + b"x=" + b"y" * 10000 + b"\n\n",
            b"request=something_else\nclient_address=192.0.2.1\n\n",
            b"request=smtpd_access_policy\nclient_address=not-an-ip\n\n",
        ):
            with PolicyClient(address) as client:
                client.send(bad)
                assert client.closed()
            assert good.ask() == "DUNNO"
    snapshot = gw.call(gw.gateway.stats.snapshot)
    counters = snapshot.get("counters", snapshot)
    malformed = {k: v for k, v in counters.items() if k.startswith("policy.malformed.")}
    assert malformed == {
        "policy.malformed.malformed_line": 1,
        "policy.malformed.line_too_long": 1,
        "policy.malformed.unknown_request": 1,
        "policy.malformed.bad_client_address": 1,
    }


def test_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "policy.sock")
    overrides = policy_settings(tmp_path, **{"policy.listen": path})
    with running_gateway(tmp_path / "Maildir", **overrides), PolicyClient(path) as client:
        assert client.ask(recipient="nobody@example.test") == UNKNOWN
        # srw-rw----: Postfix's user reaches it through mailmoat's group, nobody else does
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660


def test_slow_directory_gets_defer_if_permit(tmp_path: Path) -> None:
    """A call-ahead server that never answers: past policy.timeout the answer is a temporary
    DEFER_IF_PERMIT, never DUNNO (invariant 6)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def hold() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    overrides = policy_settings(
        tmp_path,
        **{
            "directory.default": "callahead",
            "callahead.server": f"127.0.0.1:{silent.getsockname()[1]}",
            "policy.timeout": 1.0,
        },
    )
    host, port = overrides["policy.listen"].split(":")
    try:
        with (
            running_gateway(tmp_path / "Maildir", **overrides),
            PolicyClient((host, int(port))) as client,
        ):
            assert client.ask(recipient="alice@example.test") == DEFER_TIMEOUT
    finally:
        stop.set()
        thread.join()
        silent.close()
        for sock in held:
            sock.close()


def test_beside_the_gateway_one_state(tmp_path: Path) -> None:
    """The policy service beside a listening gateway: a harvester it bans is refused by the
    gateway's SMTP listener too (one store, one set of bans)."""
    overrides = policy_settings(tmp_path, **{"server.listen": ["127.0.0.1:0"]})
    host, port = overrides["policy.listen"].split(":")
    settings = gateway_settings(tmp_path / "Maildir", **overrides)
    gw = RunningGateway(settings).start()
    try:
        with PolicyClient((host, int(port))) as client:
            for i in range(3):
                assert client.ask(client_address="127.0.0.1", recipient=f"g{i}@example.test")
        with pytest.raises(smtplib.SMTPConnectError) as err:
            smtplib.SMTP("127.0.0.1", gw.port, timeout=10)
        assert err.value.smtp_code == 421
    finally:
        gw.stop()


def test_peer_stuck_mid_request_or_leaving_is_closed_and_counted(
    policy: tuple[RunningGateway, tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    gw, address = policy
    assert gw.gateway is not None
    monkeypatch.setattr("mailmoat.postfix_policy.service.POLICY_READ_TIME", 0.3)
    with PolicyClient(address) as good:
        with PolicyClient(address) as stuck:
            stuck.send(b"request=smtpd_access_policy\nclient_addr")
            assert stuck.closed()
        with PolicyClient(address) as leaving:
            leaving.send(b"request=smtpd_access_policy\n")
        assert good.ask() == "DUNNO"

    def counters() -> dict[str, int]:
        snapshot = gw.call(gw.gateway.stats.snapshot)
        return snapshot.get("counters", snapshot)

    wait_until(lambda: counters().get("policy.malformed.truncated") == 1, "truncated counted")
    assert counters().get("policy.closed.timeout") == 1


def test_connections_are_capped(
    policy: tuple[RunningGateway, tuple[str, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, address = policy
    monkeypatch.setattr("mailmoat.postfix_policy.service.POLICY_CONNECTIONS", 2)
    with PolicyClient(address) as one, PolicyClient(address) as two:
        assert one.ask() == two.ask() == "DUNNO"
        with PolicyClient(address) as three:
            assert three.closed()
        assert one.ask() == "DUNNO"
    with PolicyClient(address) as again:  # the places are given back
        assert again.ask() == "DUNNO"


def test_nothing_to_serve_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.listen is empty"):
        gateway_settings(tmp_path, **{"server.listen": []})
    with pytest.raises(ConfigError, match="policy"):
        gateway_settings(tmp_path, **{"policy.listen": "localhost"})


def test_reload_gives_the_policy_service_the_new_directory_and_lists(tmp_path: Path) -> None:
    overrides = policy_settings(tmp_path)
    host, port = overrides["policy.listen"].split(":")
    with (
        running_gateway(tmp_path / "Maildir", **overrides) as gw,
        PolicyClient((host, int(port))) as client,
    ):
        assert gw.gateway is not None
        assert client.ask(recipient="carol@example.test") == UNKNOWN
        assert client.ask(client_address="192.0.2.99") == "DUNNO"
        (tmp_path / "users").write_text("alice@example.test\ncarol@example.test\n")
        denied = {**overrides, "admission.deny_networks": ["192.0.2.99/32"]}
        new = gateway_settings(tmp_path / "Maildir", **denied)
        assert gw.run(gw.gateway.reload(new)) == []
        assert client.ask(recipient="carol@example.test") == "DUNNO"
        assert client.ask(recipient="alice@example.test") == "DUNNO"
        assert client.ask(recipient="bob@example.test") == UNKNOWN
        # the session of 192.0.2.99 was let in before: it is asked again under the new lists
        assert client.ask(client_address="192.0.2.99").startswith("421 4.7.0")


def test_harvest_tarpit_delays_the_answer(tmp_path: Path) -> None:
    """Past harvest.tarpit_after unknown recipients, every answer to that client waits, valid
    recipient or not, as at the gateway."""
    overrides = policy_settings(
        tmp_path,
        **{"harvest.tarpit_after": 1, "harvest.tarpit_delay": 0.4, "harvest.tarpit_max": 0.4},
    )
    host, port = overrides["policy.listen"].split(":")
    with (
        running_gateway(tmp_path / "Maildir", **overrides),
        PolicyClient((host, int(port))) as client,
    ):
        assert client.ask(recipient="guess@example.test") == UNKNOWN
        started = time.monotonic()
        assert client.ask(recipient="alice@example.test") == "DUNNO"
        assert time.monotonic() - started >= 0.4


def test_policy_listen_on_the_gateways_port_is_refused(tmp_path: Path) -> None:
    """`mailmoat config check` and `serve` say so (one line), before anything binds."""
    settings = gateway_settings(
        tmp_path, **{"server.listen": ["127.0.0.1:2600"], "policy.listen": "127.0.0.1:2600"}
    )
    assert setting_problems(settings) == [
        (
            "policy.listen",
            "127.0.0.1:2600 is the gateway's own server.listen 127.0.0.1:2600: the port is taken",
        )
    ]


def test_a_peer_outside_policy_clients_is_closed_at_accept(tmp_path: Path) -> None:
    """The service believes client_address and recipient: a peer not in policy.clients is
    closed before its request is read, so it cannot get 127.0.0.1 harvest-banned (red-team
    H2: 5 connections x 20 unknown recipients banned the gateway's own address)."""
    overrides = policy_settings(tmp_path, **{"policy.clients": ["127.0.0.2/32"]})
    with running_gateway(tmp_path / "Maildir", **overrides) as gw:
        host, port = overrides["policy.listen"].split(":")
        address = (host, int(port))

        def counters() -> dict[str, int]:
            snapshot = gw.call(gw.gateway.stats.snapshot)
            return snapshot.get("counters", snapshot)

        with PolicyClient(address) as stranger:
            assert stranger.closed()
        wait_until(lambda: counters().get("policy.refused_peer") == 1, "stranger counted")
        with PolicyClient(address, source="127.0.0.2") as mta:
            assert mta.ask("RCPT", client_address="127.0.0.1") == "DUNNO"
        assert counters().get("policy.refused_peer") == 1
