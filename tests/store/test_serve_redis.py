"""Two real `mailmoat serve` nodes, each a supervisor with two workers, sharing one
redis-server: the workers' store calls reach Redis through their supervisor, a harvest split
over the nodes is banned on both, and a ban set by hand on one is refused at the other."""

from __future__ import annotations

import contextlib
import smtplib
from pathlib import Path

import pytest

from mailmoat.policy.harvest import R_BANNED
from mailmoat.server.admin import bans_path, request
from tests.server.test_workers import served
from tests.support.raw_client import refused_at_connect
from tests.support.redis import available, redis_server
from tests.support.waiting import wait_until

pytestmark = pytest.mark.skipif(not available(), reason="redis-server is not installed")


def guesses(port: int, source: str, names: list[str]) -> list[int]:
    codes = []
    with smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0)) as s:
        s.ehlo("client.test")
        s.mail("h@sender.test")
        for name in names:
            codes.append(s.rcpt(f"{name}@example.test")[0])
    return codes


def test_two_served_nodes_share_harvest_scores_and_bans(tmp_path: Path) -> None:
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(redis_server(tmp_path / "redis"))
        common = {
            "directory.default": "static",
            "directory.static_file": str(users),
            "store.backend": "redis",
            "store.url": server.url,
            "harvest.tarpit_after": 3,
            "harvest.threshold": 4,
            "harvest.ban_after": 4,
            "harvest.tarpit_delay": 0.01,
            "harvest.tarpit_max": 0.05,
            "admission.max_rate": 0,  # the polls below must not earn a rate ban
        }
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        a = stack.enter_context(served(tmp_path / "a", **common))
        b = stack.enter_context(served(tmp_path / "b", **common))
        a.send()
        b.send()
        assert guesses(a.port, "127.0.0.31", ["g0", "g1"]) == [550, 550]
        assert guesses(b.port, "127.0.0.31", ["g2", "g3"])[0] == 550
        # (the supervisor greets at once; the worker's harvest check then says 421 and closes)
        assert refused_at_connect(b.port, "127.0.0.31").endswith(R_BANNED.to_bytes())
        wait_until(  # pushed to a's supervisor, asked by a's worker
            lambda: refused_at_connect(a.port, "127.0.0.31").endswith(R_BANNED.to_bytes()),
            "the harvester refused at a",
        )
        # a ban by hand on b reaches a's supervisor, which refuses at accept
        status, _ = request(str(b.admin), bans_path("127.0.0.32", 600), method="POST")
        assert status == 200
        wait_until(
            lambda: refused_at_connect(a.port, "127.0.0.32").startswith(b"421"),
            "the ban refused at a",
        )
        a.send()  # everyone else still gets through
        wait_until(lambda: len(list(a.maildir.glob("new/*"))) == 2, "a delivered both")
