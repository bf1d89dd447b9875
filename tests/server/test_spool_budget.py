"""The node's budget for message data in memory (server.spool_memory_total): sessions in DATA
together keep at most that much in memory; past it a session's data goes to a temporary file,
and its message is delivered byte for byte all the same. Stress mode keeps less per session."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.server.front import spool_share
from mailmoat.server.gateway import Gateway
from mailmoat.server.supervisor import LOCAL_SESSIONS, Supervisor
from tests.support.gateway import running_gateway
from tests.support.raw_client import connect, read_reply


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _body(letter: str, size: int) -> bytes:
    line = (letter * 78).encode() + b"\r\n"
    return b"Subject: " + letter.encode() + b"\r\n\r\n" + line * (size // len(line))


def _in_data(port: int, src: str) -> Any:
    s = connect(port, src, timeout=10)
    assert read_reply(s).startswith(b"220")
    for line, code in (
        (b"EHLO client.test", b"250"),
        (b"MAIL FROM:<s@sender.test>", b"250"),
        (b"RCPT TO:<alice@example.test>", b"250"),
        (b"DATA", b"354"),
    ):
        s.sendall(line + b"\r\n")
        assert read_reply(s).startswith(code)
    return s


def _open_files_under(directory: Path) -> list[str]:
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            out.append(target)
    return out


def test_past_the_budget_a_session_spools_to_disk_and_delivers_byte_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool_dir))
    maildir = tmp_path / "md"
    bodies = {"A": _body("A", 80_000), "B": _body("B", 80_000)}
    with running_gateway(maildir, **{"server.spool_memory_total": 100_000}) as gw:
        assert gw.gateway is not None
        budget = gw.gateway.spool_budget
        first = _in_data(gw.port, "127.0.0.11")
        first.sendall(bodies["A"])
        _wait(lambda: budget.used >= len(bodies["A"]))  # in memory: under both limits
        assert _open_files_under(spool_dir) == []
        second = _in_data(gw.port, "127.0.0.12")
        second.sendall(bodies["B"])
        # far under server.spool_memory (256 KiB), but the budget is spent: a file on disk
        _wait(lambda: len(_open_files_under(spool_dir)) == 1)
        assert budget.used <= 100_000
        for s in (first, second):
            s.sendall(b".\r\n")
            assert read_reply(s).startswith(b"250")
            s.sendall(b"QUIT\r\n")
            s.close()
        _wait(lambda: budget.used == 0 and not _open_files_under(spool_dir))
    delivered = sorted((maildir / "new").iterdir())
    assert len(delivered) == 2
    # a Maildir file has LF line ends; the content is otherwise the client's, byte for byte
    got = {
        p.read_bytes().split(b"\nSubject: ", 1)[1][:1].decode(): p.read_bytes() for p in delivered
    }
    for letter, body in bodies.items():
        assert got[letter].endswith(b"\n" + body.replace(b"\r\n", b"\n")), letter


def test_stress_mode_keeps_less_of_each_message_in_memory(tmp_path: Path) -> None:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "md"),
            "admission.max_connections": 10,
            "stress.spool_memory": 1000,
        },
    )
    gw = Gateway(settings)
    calm = gw.new_spool()
    calm.write(b"x" * 2000)
    assert calm.in_memory
    gw.stress.observe(9)  # above stress.start_at of the 10 connections
    assert gw.stress.active
    stressed = gw.new_spool()
    stressed.write(b"x" * 2000)
    assert not stressed.in_memory and stressed.getvalue() == b"x" * 2000
    for spool in (calm, stressed):
        spool.close()
    assert gw.spool_budget.used == 0


def test_the_node_budget_is_split_among_the_worker_processes(tmp_path: Path) -> None:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "server.workers": 0,  # one per core: the supervisor tells the workers how many
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "md"),
            "server.spool_memory_total": 1_000_000,
        },
    )
    supervisor = Supervisor(settings, 4)
    # the supervisor's own few sessions: server.spool_memory each
    assert supervisor.local.spool_budget.limit == LOCAL_SESSIONS * settings.server.spool_memory
    sent = config.Settings.model_validate_json(supervisor._settings_json)
    assert sent.server.workers == 4 + 1  # the clean lane's worker (server.clean_lane) counted
    rest = 1_000_000 - LOCAL_SESSIONS * settings.server.spool_memory
    assert spool_share(sent, worker=True) == rest // 5  # each worker process a fifth of the rest
    assert spool_share(settings, worker=False) == 1_000_000  # one process: all of it
