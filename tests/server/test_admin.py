"""The stats endpoint and `mailmoat stats`, against a running gateway: TCP on loopback and a
unix socket; counters show each refusal by reason."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli import main
from tests.support.gateway import running_gateway
from tests.support.raw_client import refused_at_connect


def test_stats_over_tcp_show_refusals_by_reason(tmp_path: Path) -> None:
    settings = {"admin.listen": "127.0.0.1:0", "admission.deny_networks": ["127.0.40.0/24"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        assert gw.gateway is not None and gw.gateway.admin is not None
        address = gw.gateway.admin.address
        assert isinstance(address, tuple)
        host, port = address
        for _ in range(3):
            assert refused_at_connect(gw.port, "127.0.40.1").startswith(b"421 4.7.0")
        runner = CliRunner()
        text = runner.invoke(main, ["stats", "--admin", f"{host}:{port}"])
        assert text.exit_code == 0, text.output
        lines = dict(line.split(None, 1) for line in text.output.splitlines())
        assert lines["refused.denied"] == "3"
        assert lines["connections.accepted"] == "3"
        assert lines["connections.active"] == "0"
        assert lines["stress.active"] == "0"
        raw = runner.invoke(main, ["stats", "--admin", f"{host}:{port}", "--json"])
        doc = json.loads(raw.output)
        assert doc["counters"]["closed.refused"] == 3
        assert doc["rss_kib"] > 0 and doc["pid"] > 0


def test_stats_over_a_unix_socket_named_in_the_config(tmp_path: Path) -> None:
    sock = tmp_path / "admin.sock"
    with running_gateway(tmp_path / "md", **{"admin.listen": str(sock)}):
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        conf = tmp_path / "mailmoat.toml"
        conf.write_text(f'[admin]\nlisten = "{sock}"\n')
        result = CliRunner().invoke(main, ["stats", "-c", str(conf), "--json"])
        assert result.exit_code == 0, result.output
        assert "connections.active" in json.loads(result.output)["gauges"]
    assert not sock.exists()


def test_stats_without_an_endpoint_says_so() -> None:
    result = CliRunner().invoke(main, ["stats"])
    assert result.exit_code == 2
    assert "admin.listen" in result.output


def test_stats_from_a_gateway_that_is_not_running(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["stats", "--admin", str(tmp_path / "none.sock")])
    assert result.exit_code == 1
    assert "cannot read stats" in result.output
