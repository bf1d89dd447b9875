"""A real HAProxy (contrib/haproxy.cfg: `mode tcp`, `send-proxy-v2`, `option smtpchk`) in front
of a real `mailmoat serve`, in one process and with a supervisor and two workers. Every
connection reaches mailmoat from HAProxy's 127.0.0.1; the client binds 127.0.0.77, and that is
the address mailmoat logs, writes in `Received:` and bans. HAProxy's health checks are answered
(the server stays up and mail flows) and not counted as clients. A client that connects to
mailmoat directly from an untrusted address with a PROXY line is not taken as proxied."""

from __future__ import annotations

import os
import smtplib
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli import main
from tests.server.test_workers import Served, served
from tests.support.haproxy import CONTRIB, HAPROXY, contrib_config, needs_haproxy, running_haproxy
from tests.support.ports import free_port
from tests.support.raw_client import RawClient, connect, read_reply
from tests.support.waiting import wait_until

pytestmark = [needs_haproxy, pytest.mark.peers]

CLIENT = "127.0.0.77"
BODY = b"Subject: through haproxy\r\n\r\nhello\r\n"


def _messages(srv: Served) -> list[bytes]:
    return [p.read_bytes() for p in sorted((srv.maildir / "new").glob("*"))]


def _log(srv: Served) -> str:
    return (srv.maildir.parent / "mailmoat.log").read_text(errors="replace")


@pytest.mark.parametrize("workers", [1, 2])
def test_mailmoat_behind_haproxy(tmp_path: Path, workers: int) -> None:
    settings = {"server.proxy_protocol": ["127.0.0.1/32"], "log.level": "info"}
    port = free_port()
    with (
        served(tmp_path, workers, **settings) as srv,
        running_haproxy(tmp_path, contrib_config(port, [srv.port]), port) as haproxy,
    ):
        # health checks: a LOCAL header, EHLO, QUIT; answered, so HAProxy keeps the server up
        wait_until(lambda: srv.counter("proxy.local") >= 2, "two health checks answered")

        # with workers, the supervisor's own places are taken (by direct, unproxied clients),
        # so the proxied session is handed over to a worker: the address goes with it
        held = srv.fill_local("127.0.0.20") if workers > 1 else []
        with smtplib.SMTP("127.0.0.1", port, timeout=20, source_address=(CLIENT, 0)) as c:
            c.sendmail("bob@sender.test", ["alice@example.test"], BODY)
        wait_until(lambda: len(_messages(srv)) == 1, "the message delivered")
        assert f"([{CLIENT}])".encode() in _messages(srv)[0]
        if workers > 1:
            (name,) = os.listdir(srv.maildir / "new")
            pid = int(name.split("P", 1)[1].split("R", 1)[0])
            assert pid in srv.worker_pids(), "delivered by a worker"
            for s in held:
                s.close()
        wait_until(lambda: f"client={CLIENT}" in _log(srv), "the client's address logged")
        # the health checks' sessions are not logged at info, nor counted as closed sessions
        assert "client=127.0.0.1" not in _log(srv)
        wait_until(lambda: srv.counter("closed.quit") == 1, "the client's session counted")
        # the checks went on meanwhile; only the one client was ever admitted
        assert srv.counter("connections.accepted") == 1 + len(held)
        assert srv.counter("proxy.bad_header") == 0

        # a ban of the client's address refuses it through HAProxy; a neighbour still passes
        done = CliRunner().invoke(main, ["ban", CLIENT, "--for", "600", "--admin", str(srv.admin)])
        assert done.exit_code == 0, done.output
        with connect(port, CLIENT) as s:
            refusal = read_reply(s)
        assert refusal.startswith(b"421 4.7.0") and b"temporarily blocked" in refusal, refusal
        with connect(port, "127.0.0.78") as s:
            assert read_reply(s).startswith(b"220 ")
        wait_until(lambda: srv.counter("refused.banned") == 1, "the ban refusal counted")

        # straight to mailmoat from an address that is not a trusted proxy: plain SMTP, and
        # the PROXY line naming the banned address is a bad command, not an address
        with RawClient(srv.port, source="127.0.0.5") as c:
            c.expect(220)
            assert c.command(f"PROXY TCP4 {CLIENT} 127.0.0.1 5000 25\r\n".encode()).code >= 500
            assert c.command(b"QUIT\r\n").code == 221
        assert srv.counter("refused.banned") == 1
        assert "is DOWN" not in haproxy.output(), haproxy.output()


def test_the_contrib_example_is_valid_haproxy() -> None:
    done = subprocess.run(
        [HAPROXY, "-c", "-f", str(CONTRIB)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stdout + done.stderr
