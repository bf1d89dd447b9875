"""`mailmoat ban`, `unban` and `bans` against a running gateway: an address or a network
banned by the administrator is refused at connect at once (421), listed with its time left,
let in again by `unban` or when the ban runs out; harvest and strike bans are listed and
lifted the same way; bad targets and lengths get one clear line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from mailmoat.cli import main
from tests.support.gateway import running_gateway
from tests.support.raw_client import connect, read_reply
from tests.support.waiting import wait_until


def _cli(endpoint: str, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--admin", endpoint])


def _greeting(port: int, source: str) -> bytes:
    with connect(port, source) as s:
        return read_reply(s)


def _endpoint(gw: object) -> str:
    host, port = gw.gateway.admin.address  # type: ignore[attr-defined]
    return f"{host}:{port}"


def test_ban_an_address_list_it_and_unban_it(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _endpoint(gw)
        assert _greeting(gw.port, "127.0.0.50").startswith(b"220 ")
        done = _cli(endpoint, "ban", "127.0.0.50", "--for", "600")
        assert done.exit_code == 0 and done.output == "banned 127.0.0.50 for 600 s\n"
        assert _greeting(gw.port, "127.0.0.50").startswith(b"421 4.7.0")
        assert _greeting(gw.port, "127.0.0.51").startswith(b"220 ")  # only that address
        listed = json.loads(_cli(endpoint, "bans", "--json").output)
        assert [(b["target"], b["kind"]) for b in listed] == [("127.0.0.50", "address")]
        assert 590 < listed[0]["seconds"] <= 600
        assert "127.0.0.50" in _cli(endpoint, "bans").output
        done = _cli(endpoint, "unban", "127.0.0.50")
        assert done.exit_code == 0 and done.output == "unbanned 127.0.0.50\n"
        assert _greeting(gw.port, "127.0.0.50").startswith(b"220 ")
        assert json.loads(_cli(endpoint, "bans", "--json").output) == []
        done = _cli(endpoint, "unban", "127.0.0.50")
        assert done.exit_code == 1 and "not banned" in done.output


def test_ban_a_network_until_it_runs_out(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _endpoint(gw)
        assert _cli(endpoint, "ban", "127.0.52.0/24", "--for", "1.5").exit_code == 0
        for host in ("127.0.52.1", "127.0.52.200"):
            assert _greeting(gw.port, host).startswith(b"421 4.7.0")
        assert _greeting(gw.port, "127.0.53.1").startswith(b"220 ")
        listed = json.loads(_cli(endpoint, "bans", "--json").output)
        assert [(b["target"], b["kind"]) for b in listed] == [("127.0.52.0/24", "network")]
        # the ban runs out by itself
        wait_until(lambda: _greeting(gw.port, "127.0.52.1").startswith(b"220 "), "ban expired")
        assert json.loads(_cli(endpoint, "bans", "--json").output) == []


def test_ipv4_mapped_targets_ban_the_ipv4_clients(tmp_path: Path) -> None:
    """Red-team M2: clients are matched by their IPv4 address, so a ban of
    ::ffff:127.0.0.60 or of ::ffff:127.0.61.0/120 used to match no one."""
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _endpoint(gw)
        done = _cli(endpoint, "ban", "::ffff:127.0.0.60", "--for", "600")
        assert done.exit_code == 0 and done.output == "banned 127.0.0.60 for 600 s\n"
        assert _greeting(gw.port, "127.0.0.60").startswith(b"421 4.7.0")
        done = _cli(endpoint, "ban", "::ffff:127.0.61.0/120")
        assert done.exit_code == 0 and done.output.startswith("banned 127.0.61.0/24 for ")
        assert _greeting(gw.port, "127.0.61.9").startswith(b"421 4.7.0")
        assert _greeting(gw.port, "127.0.62.9").startswith(b"220 ")
        listed = json.loads(_cli(endpoint, "bans", "--json").output)
        assert sorted(b["target"] for b in listed) == ["127.0.0.60", "127.0.61.0/24"]
        assert _cli(endpoint, "unban", "::ffff:127.0.0.60").exit_code == 0
        assert _greeting(gw.port, "127.0.0.60").startswith(b"220 ")
        refused = _cli(endpoint, "ban", "::/64")  # holds mapped addresses and more
        assert refused.exit_code == 2 and "IPv4 form" in refused.output, refused.output


def test_unban_a_network_and_its_harvest_ban(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _endpoint(gw)
        assert _cli(endpoint, "ban", "127.0.54.0/24").exit_code == 0
        assert _greeting(gw.port, "127.0.54.9").startswith(b"421")
        assert _cli(endpoint, "unban", "127.0.54.0/24").exit_code == 0
        assert _greeting(gw.port, "127.0.54.9").startswith(b"220 ")


def test_strike_bans_are_listed_and_lifted(tmp_path: Path) -> None:
    settings = {"admin.listen": "127.0.0.1:0", "admission.max_per_ip": 1, "bans.strikes": 1}
    with running_gateway(tmp_path / "md", **settings) as gw:
        endpoint = _endpoint(gw)
        held = connect(gw.port, "127.0.0.60")
        assert read_reply(held).startswith(b"220 ")
        # over the per-address cap: a strike, and one strike bans here
        assert _greeting(gw.port, "127.0.0.60").startswith(b"421")

        def banned() -> bool:
            listed = json.loads(_cli(endpoint, "bans", "--json").output)
            return [b["target"] for b in listed] == ["127.0.0.60"]

        wait_until(banned, "the strike ban listed")
        held.close()
        assert _cli(endpoint, "unban", "127.0.0.60").exit_code == 0
        wait_until(lambda: _greeting(gw.port, "127.0.0.60").startswith(b"220 "), "let in")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["ban", "not-an-address"], "not an address or network"),
        (["ban", "0.0.0.0/0"], "wider than /8"),
        (["ban", "::/0"], "wider than /16"),
        (["ban", "127.0.0.70", "--for", "0"], "more than 0"),
        (["ban", "127.0.0.70", "--for", "1e12"], "at most"),
        (["unban", "nonsense"], "not an address or network"),
    ],
)
def test_bad_targets_and_lengths_are_one_clear_line(
    tmp_path: Path, args: list[str], problem: str
) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        done = _cli(_endpoint(gw), *args)
        assert done.exit_code == 2
        assert problem in done.output and len(done.output.strip().splitlines()) == 1
        assert json.loads(_cli(_endpoint(gw), "bans", "--json").output) == []


def test_without_an_endpoint_it_says_so() -> None:
    done = CliRunner().invoke(main, ["ban", "127.0.0.80"])
    assert done.exit_code == 2 and "admin.listen" in done.output


def test_a_ban_holds_in_front_of_the_workers(tmp_path: Path) -> None:
    from tests.server.test_workers import served

    with served(tmp_path) as srv:
        held = srv.fill_local()  # the supervisor's own places taken: the next go to workers
        assert _cli(str(srv.admin), "ban", "127.0.0.90").exit_code == 0
        assert _greeting(srv.port, "127.0.0.90").startswith(b"421 4.7.0")
        assert _greeting(srv.port, "127.0.0.91").startswith(b"220 ")
        assert _cli(str(srv.admin), "unban", "127.0.0.90").exit_code == 0
        assert _greeting(srv.port, "127.0.0.90").startswith(b"220 ")
        for s in held:
            s.close()
