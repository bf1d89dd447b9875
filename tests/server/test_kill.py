"""Invariant 1 with the Maildir default: SIGKILL at any moment of a transaction leaves no
partial file in new/, and every message answered with 250 is complete in new/."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.ports import free_port, listening_in
from tests.support.waiting import DEADLINE, wait_until

KILLS = 14
"""Transactions killed at least; more (up to MAX_KILLS) while the kills have not yet landed
on both sides of the 250."""

MAX_KILLS = 30

BODY = b"From: <a@b.test>\r\nSubject: big\r\n\r\n" + b"".join(
    b"line %07d " % i + b"x" * 60 + b"\r\n" for i in range(30000)
)


def _launch(maildir: Path, workers: int, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """`mailmoat serve` on a free port, started (not yet listening)."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mailmoat",
                "serve",
                "--listen",
                f"127.0.0.1:{port}",
                "--domain",
                "example.test",
                "--maildir",
                str(maildir),
                "--hostname",
                "mx.test",
                "--workers",
                str(workers),
            ],
            start_new_session=True,
            stdout=out,
            stderr=out,
        )
    return proc, port


def _listening(
    launched: tuple[subprocess.Popen[bytes], int], maildir: Path, workers: int, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """`launched` once it listens on its port itself; another one on another port when a
    busy machine's other tests took that port first."""
    proc, port = launched
    for _ in range(5):
        try:
            wait_until(
                lambda p=proc, n=port: p.poll() is not None or listening_in(p.pid, n),
                "mailmoat listening",
                describe=log.read_text,
            )
        except AssertionError:
            proc.kill()
            raise
        if proc.poll() is None:
            return proc, port
        proc, port = _launch(maildir, workers, log)
    raise AssertionError(f"mailmoat did not start:\n{log.read_text()}")


def _send(port: int, kill_at: float, proc: subprocess.Popen[bytes]) -> bytes:
    """Run one transaction; SIGKILL the server `kill_at` seconds after the final dot (with
    worker processes, all of them at once: the process group, as a crash would)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    f = s.makefile("rb")
    f.readline()
    s.sendall(b"EHLO c.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    for cmd in (b"MAIL FROM:<a@b.test>\r\n", b"RCPT TO:<alice@example.test>\r\n", b"DATA\r\n"):
        s.sendall(cmd)
        f.readline()
    s.sendall(BODY + b".\r\n")
    time.sleep(kill_at)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(DEADLINE)
    try:
        return f.readline()
    except OSError:
        return b""
    finally:
        s.close()


def _listing(maildir: Path) -> set[str]:
    new = maildir / "new"
    return set(os.listdir(new)) if new.exists() else set()


@pytest.mark.timeout(300)  # up to MAX_KILLS servers started, each a second or more when busy
@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_never_leaves_partial_or_loses_acknowledged_mail(
    tmp_path: Path, workers: int
) -> None:
    maildir = tmp_path / "Maildir"
    rng = random.Random(1234)
    acknowledged = kills = 0
    # Half the kills land early (mostly before the 250), half late (mostly after it); the
    # early ones cover the window where the file is being written and fsynced. How long the
    # server takes to get to its 250 depends on the machine's load: while no kill has come
    # after a 250 the late ones wait longer, while every kill has, the early ones come sooner.
    early, late = 0.03, 0.2
    # Each kill needs a new server: the next one starts while this one takes its message
    # (another port, the same Maildir), so the test does not wait for each start in turn.
    logs = [tmp_path / f"mailmoat-{n}.log" for n in range(1, MAX_KILLS + 2)]
    launched = _launch(maildir, workers, logs[0])
    started = [launched[0]]
    try:
        while kills < KILLS or not 0 < acknowledged < kills:
            assert kills < MAX_KILLS, f"{acknowledged} of {kills} kills came after the 250"
            delay = rng.uniform(0.0, early) if kills % 2 else rng.uniform(early, late)
            kills += 1
            log = logs[kills - 1]
            proc, port = _listening(launched, maildir, workers, log)
            launched = _launch(maildir, workers, logs[kills])
            started += [proc, launched[0]]
            acknowledged += _kill_once(maildir, proc, port, delay, log)
            if acknowledged == 0 and kills % 2:
                late = min(2 * late, 5.0)
            if acknowledged == kills:
                early /= 2
    finally:
        for each in started:
            if each.poll() is None:
                os.killpg(each.pid, signal.SIGKILL)
                each.wait(DEADLINE)


def _kill_once(
    maildir: Path, proc: subprocess.Popen[bytes], port: int, delay: float, log: Path
) -> int:
    """One transaction killed `delay` s after its final dot: 1 if it was answered 250 (then
    its message is complete in new/), 0 if not (then nothing new is there, or all of it)."""
    before = _listing(maildir)
    try:
        reply = _send(port, delay, proc)
    except OSError as err:
        raise AssertionError(f"{err} before the kill; server log:\n{log.read_text()}") from err
    added = _listing(maildir) - before
    acknowledged = reply.startswith(b"250")
    if acknowledged:
        assert len(added) == 1, "a 250 was given but the message is not in new/"
    assert len(added) <= 1
    for name in added:
        assert (maildir / "new" / name).read_bytes().endswith(BODY.replace(b"\r\n", b"\n")), (
            "partial file in new/"
        )
    return int(acknowledged)
