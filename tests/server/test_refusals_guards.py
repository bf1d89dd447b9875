"""What follows a refusal, where mutation testing (scripts/mutation over server/refusals.py)
found nothing holding: commands a client sent together, past the tarpit threshold, are all
answered once each delay is over; the delay holds the replies, it does not drop the input."""

from __future__ import annotations

from pathlib import Path

from tests.support.gateway import running_gateway
from tests.support.raw_client import connect, read_all, read_line, read_reply
from tests.support.waiting import wait_until


def test_pipelined_commands_are_answered_after_a_tarpit_delay(tmp_path: Path) -> None:
    settings = {"tarpit.error_threshold": 1, "tarpit.error_delay": 0.1, "smtp.max_errors": 10}
    with running_gateway(tmp_path / "md", **settings) as gw, connect(gw.port) as s:
        assert read_line(s).startswith(b"220 ")
        s.sendall(b"EHLO c.test\r\n")
        assert b"PIPELINING" in read_reply(s)
        # one group (RFC 2920): four errors (the 2nd to 4th delayed) and a NOOP, all read by
        # the gateway before the first delay starts
        s.sendall(b"RCPT TO:<alice@example.test>\r\n" * 4 + b"NOOP\r\n")
        for n in range(4):
            assert read_line(s).startswith(b"503 5.5.1"), n
        assert read_line(s).startswith(b"250 ")
        assert gw.gateway is not None and gw.gateway.stats.get("tarpit.delayed") == 3


def test_a_check_that_refuses_and_closes_counts_the_close_as_policy(tmp_path: Path) -> None:
    """The first unknown recipient reaches `harvest.ban_after` 1: it is answered and the
    session ends, the close counted under `closed.policy` (no earlier refusal named it)."""
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    settings = {
        "directory.default": "static",
        "directory.static_file": str(users),
        "harvest.tarpit_after": 1,
        "harvest.threshold": 1,
        "harvest.ban_after": 1,
    }
    with running_gateway(tmp_path / "md", **settings) as gw, connect(gw.port) as s:
        assert read_line(s).startswith(b"220 ")
        s.sendall(b"HELO c.test\r\n")
        assert read_line(s).startswith(b"250 ")
        s.sendall(b"MAIL FROM:<a@b.test>\r\n")
        assert read_line(s).startswith(b"250 ")
        s.sendall(b"RCPT TO:<guess@example.test>\r\n")
        assert read_all(s).startswith(b"550 ")  # answered, then closed
        assert gw.gateway is not None
        stats = gw.gateway.stats
        wait_until(lambda: stats.get("closed.policy") == 1, "the close counted as policy")
