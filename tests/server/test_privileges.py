"""Least privilege (`server.user`, `server.group`): a real `mailmoat serve` started as root
binds a privileged port, then it and every worker run as the unprivileged user with no way
back to root; mail still flows. Bad identities are one clear line at `config check` and at
start; running as root without a user is warned about."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli import main

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return dict(line.split(":\t", 1) for line in lines if ":\t" in line)


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _free_privileged_port() -> int:
    for port in range(700, 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port under 1024")


def _wait_connect(port: int, proc: subprocess.Popen[bytes]) -> smtplib.SMTP:
    deadline = time.monotonic() + 60
    while True:
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except OSError:
            if proc.poll() is not None:
                raise AssertionError(proc.communicate()[1].decode()) from None
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)


def _serve(tmp_path: Path, port: int, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "--listen", f"127.0.0.1:{port}",
         "--domain", "example.test", "--maildir", str(tmp_path / "Maildir"),
         "--hostname", "mx.example.test", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.communicate(timeout=30)[1].decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()[1].decode()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder nobody can reach (pytest's tmp_path sits under a 0700 folder of root's)."""
    path = Path(tempfile.mkdtemp(prefix="mailmoat-priv-", dir="/tmp"))
    path.chmod(0o777)  # the Maildir is made after the drop, by nobody
    yield path
    shutil.rmtree(path, ignore_errors=True)


@root_only
@pytest.mark.parametrize("workers", [1, 2])
def test_binds_port_below_1024_then_runs_as_nobody(shared_dir: Path, workers: int) -> None:
    tmp_path = shared_dir
    nobody = pwd.getpwnam("nobody")
    config = tmp_path / "mailmoat.toml"
    config.write_text(f'[server]\nuser = "nobody"\nworkers = {workers}\n[dns]\nchecks = false\n')
    config.chmod(0o644)
    port = _free_privileged_port()
    proc = _serve(tmp_path, port, "--config", str(config))
    try:
        with _wait_connect(port, proc) as client:
            message = b"Subject: x\r\n\r\nx\r\n"
            assert client.sendmail("bob@sender.test", ["alice@example.test"], message) == {}
        pids = [proc.pid, *_children(proc.pid)]
        assert len(pids) == (4 if workers == 2 else 1)  # supervisor, two workers, the lane
        for pid in pids:
            status = _status(pid)
            assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, (pid, status["Uid"])
            assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, (pid, status["Gid"])
            assert status["Groups"].strip() == ""
            assert int(status["CapEff"], 16) == 0 and int(status["CapPrm"], 16) == 0
        delivered = list((tmp_path / "Maildir" / "new").iterdir())
        assert len(delivered) == 1 and delivered[0].stat().st_uid == nobody.pw_uid
    finally:
        err = _stop(proc)
    assert proc.returncode == 0, err
    assert "privileges" in err and "running as root" not in err


@root_only
def test_running_as_root_without_a_user_is_warned(tmp_path: Path) -> None:
    port = _free_privileged_port()
    proc = _serve(tmp_path, port, "--workers", "1")
    try:
        _wait_connect(port, proc).close()
    finally:
        err = _stop(proc)
    assert "running as root: set server.user" in err


@pytest.mark.parametrize(
    ("toml", "problem"),
    [
        ('[server]\nuser = "no-such-user-here"\n', "server.user: no such user 'no-such-user-here'"),
        ('[server]\nuser = "root"\n', "is root; name an unprivileged user"),
        ('[server]\nuser = "nobody"\ngroup = "no-such-group-here"\n', "no such group"),
        ('[server]\ngroup = "nogroup"\n', "server.group needs server.user"),
    ],
)
def test_bad_identity_is_one_line_at_check_and_start(
    tmp_path: Path, toml: str, problem: str
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    checked = CliRunner().invoke(main, ["config", "check", str(config)])
    assert checked.exit_code != 0 and problem in checked.output
    started = subprocess.run(
        [sys.executable, "-m", "mailmoat", "serve", "--config", str(config), "--listen",
         "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert started.returncode != 0
    assert problem in started.stderr and "Traceback" not in started.stderr
