"""Start-up warnings: a real `mailmoat serve` says loudly when its hostname is not a fully
qualified name and when DNS checks are on but the resolver does not answer; with a working
resolver (dnsmasq on loopback) and a proper name it says neither."""

from __future__ import annotations

import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mailmoat.startup import hostname_problem
from tests.support.dns_zone import OUR_HOSTNAME
from tests.support.ports import free_port


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("mx.example.org", False),
        ("mx.example.org.", False),
        ("localhost", True),
        ("mx", True),
        ("mx.localdomain", True),
        ("mx..example.org", True),
        ("host.local", True),
    ],
)
def test_hostname_problem(name: str, bad: bool) -> None:
    assert bool(hostname_problem(name)) is bad


def _serve_log(tmp_path: Path, config: str, want: str | None, hostname: str = "mx") -> str:
    """Run serve until it answers a client (and, when `want` is given, until its log holds
    it), then stop it; its log."""
    port = free_port()
    conf = tmp_path / "m.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = 1\nhostname = "{hostname}"\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{tmp_path / "md"}"\n' + config
    )
    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)], stderr=out
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    smtplib.SMTP("127.0.0.1", port, timeout=10).quit()
                    break
                except OSError:
                    assert proc.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
            while want is not None and want not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return log.read_text()


def test_warns_about_a_dead_resolver(tmp_path: Path) -> None:
    dead = free_port()  # nothing answers DNS there
    config = f'[dns]\nnameservers = ["127.0.0.1:{dead}"]\ntimeout = 0.3\n'
    text = _serve_log(tmp_path, config, "did not answer")
    assert f"DNS checks are on but the resolver (127.0.0.1:{dead}) did not answer" in text
    assert "set dns.checks = false" in text


def test_warns_about_a_hostname_that_is_not_fqdn(tmp_path: Path) -> None:
    text = _serve_log(tmp_path, "[dns]\nchecks = false\n", "server.hostname")
    assert "server.hostname 'mx' is not a fully qualified domain name" in text


def test_quiet_with_a_working_resolver_and_a_proper_name(
    tmp_path: Path, dns_server: object
) -> None:
    port = dns_server.port  # type: ignore[attr-defined]
    config = f'[dns]\nnameservers = ["127.0.0.1:{port}"]\n'
    text = _serve_log(tmp_path, config, "startup_checks", OUR_HOSTNAME)
    assert "did not answer" not in text and "server.hostname" not in text
    assert "hostname=ok resolver=ok" in text


def test_a_busy_port_is_one_line_naming_it(tmp_path: Path) -> None:
    """`serve` on a port something else holds: exit 1, one line that says which one."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        conf = tmp_path / "m.toml"
        conf.write_text(
            f'[server]\nlisten = ["127.0.0.1:{port}"]\nworkers = 1\nhostname = "mx.example.org"\n'
            f'[domains]\nlocal = ["example.test"]\n[dns]\nchecks = false\n'
            f'[maildir]\npath = "{tmp_path / "md"}"\n'
        )
        done = subprocess.run(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"cannot start: [Errno 98] cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "Traceback" not in done.stderr
