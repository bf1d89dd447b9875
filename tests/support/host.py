"""Small shared pieces for the real-peer fixtures: waits, binaries, temp folders, subprocesses.

Ports are in tests/support/ports.py."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support import waiting

T = TypeVar("T")

INSTALL_HINT = "scripts/test installs it when run as root"


class PeerError(RuntimeError):
    """A real peer did not start, stop or answer as expected (the message carries its logs)."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll ``predicate`` until it returns something truthy (tests/support/waiting.py); raise
    PeerError after ``timeout`` s (the peer helpers catch it, e.g. to retry on another port)."""
    try:
        return waiting.wait_until(predicate, what, timeout, interval, describe)
    except waiting.ConditionTimeout as err:
        raise PeerError(str(err)) from None


def require_binary(name: str, *candidates: str) -> str:
    """Path of an installed program, or skip the test with a clear reason."""
    for path in (*candidates, shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    pytest.skip(f"{name} is not installed ({INSTALL_HINT})")
    raise AssertionError("unreachable")


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{why} needs root")


def make_searchable_tempdir(prefix: str) -> Path:
    """A fresh temp folder that unprivileged daemons (postfix, nobody) can traverse.

    ``mkdtemp`` makes 0700 folders; Postfix's master opens files below it after dropping
    privileges, so every parent must be o+x. We check the parents rather than chmod them.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o711)
    for parent in base.parents:
        if not parent.stat().st_mode & 0o001:
            shutil.rmtree(base, ignore_errors=True)
            raise PeerError(
                f"{parent} is not searchable by other users (o+x); daemons running as "
                f"postfix/nobody cannot reach {base}. Point TMPDIR somewhere else, e.g. /tmp."
            )
    return base


def run_with_tty(argv: Sequence[str], timeout: float, env: dict[str, str] | None = None):
    """Run a command with stdout/stderr on a pseudo-terminal; return (returncode, output).

    Postfix's administrative commands (postfix, postsuper, ...) write their errors to stderr only
    when stderr is a terminal, and to syslog otherwise. Tests have no syslog, so without a tty
    a failing ``postfix start`` says nothing at all.
    """
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
    finally:
        os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every writer has closed the terminal
                    data = b""
                if data:
                    chunks.append(data)
                    continue
                break
            # A daemon it started may keep the terminal open: stop when the command itself ends.
            if proc.poll() is not None or time.monotonic() > deadline:
                break
        returncode = proc.wait(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise PeerError(
            f"{' '.join(argv)} did not finish within {timeout:g}s; output so far:\n"
            + b"".join(chunks).decode("utf-8", "replace")
        ) from None
    finally:
        os.close(master)
    return returncode, b"".join(chunks).decode("utf-8", "replace").replace("\r\n", "\n")


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie (an unreaped daemon counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
