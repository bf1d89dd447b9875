"""`mailmoat serve` with `server.listen = []`: only the side services run, here the policy
service of a supervisor with worker processes (whose defences and store it shares)."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.postfix_policy.test_service import UNKNOWN
from tests.server.test_workers import served
from tests.support.policy_client import PolicyClient
from tests.support.ports import free_port


def test_serve_only_the_policy_service_with_workers(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    port = free_port()
    settings = {
        "server.listen": [],
        "policy.listen": f"127.0.0.1:{port}",
        "directory.default": "static",
        "directory.static_file": str(users),
    }
    with served(tmp_path, workers=2, **settings) as srv:
        with PolicyClient(("127.0.0.1", port)) as client:
            assert client.ask(recipient="alice@example.test") == "DUNNO"
            assert client.ask(recipient="nobody@example.test") == UNKNOWN
        assert srv.counter("policy.requests") == 2
        assert srv.stats()["gauges"]["policy.sessions"] == 1
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(30) == 0
    log = (tmp_path / "mailmoat.log").read_text()
    assert "Traceback" not in log, log
