"""Reload on SIGHUP (issue 13 item 2), with a real `mailmoat serve` and two workers.

The file is changed and SIGHUP sent: new sessions, in the supervisor and in a worker, see the
new settings, directory and lists, while sessions opened before the signal keep the old ones
through their transaction. A bad file is refused with one log line and the old configuration
stays; a changed listener is named as needing a restart and the old one keeps serving; a new
TLS certificate is served; the process never dies on SIGHUP, several in a row included. Every
wait is for a condition (a log line, a session count)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.server.test_workers import Served, served
from tests.support.ports import free_port
from tests.support.raw_client import connect, read_reply, refused_at_connect
from tests.support.tls import self_signed_cert
from tests.support.waiting import wait_until

BIG = b"Subject: big\r\n\r\n" + b"x" * 78 + b"\r\n"
BIG = BIG * (15_000 // len(BIG))  # about 15 kB: over the old limit, under the new one


def _log(tmp_path: Path) -> str:
    return (tmp_path / "mailmoat.log").read_text(errors="replace")


def _reload_lines(tmp_path: Path) -> list[str]:
    return [line for line in _log(tmp_path).splitlines() if " reload " in line]


def _hup(srv: Served, tmp_path: Path, want: str) -> str:
    """Send SIGHUP and wait for the reload's log line (which holds `want`); returns it."""
    before = len(_reload_lines(tmp_path))
    srv.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: len(_reload_lines(tmp_path)) > before, "the reload's log line")
    line = _reload_lines(tmp_path)[before]
    assert want in line, line
    return line


def _edit(tmp_path: Path, old: str, new: str) -> None:
    conf = tmp_path / "mailmoat.toml"
    text = conf.read_text()
    assert old in text, text
    conf.write_text(text.replace(old, new))


def _command(s: socket.socket, line: bytes) -> bytes:
    s.sendall(line + b"\r\n")
    return read_reply(s)


def _size(s: socket.socket) -> int:
    """EHLO; the SIZE the session offers."""
    reply = _command(s, b"EHLO client.test")
    assert reply.startswith(b"250"), reply
    for line in reply.split(b"\r\n"):
        if line[4:].startswith(b"SIZE "):
            return int(line[9:])
    raise AssertionError(reply)


def _transaction(s: socket.socket) -> tuple[bytes, bytes]:
    """carol's RCPT reply (added to the directory by the reload) and the end-of-data reply of
    a 15 kB message to alice."""
    assert _command(s, b"MAIL FROM:<bob@sender.test>").startswith(b"250")
    carol = _command(s, b"RCPT TO:<carol@example.test>")
    assert _command(s, b"RCPT TO:<alice@example.test>").startswith(b"250")
    assert _command(s, b"DATA").startswith(b"354")
    s.sendall(BIG + b".\r\n")
    return carol, read_reply(s)


def _old(s: socket.socket) -> None:
    assert _size(s) == 10_000
    carol, end = _transaction(s)
    assert carol.startswith(b"550 5.1.1"), carol
    assert end.startswith(b"552"), end


def _new(s: socket.socket) -> None:
    assert _size(s) == 20_000
    carol, end = _transaction(s)
    assert carol.startswith(b"250"), carol
    assert end.startswith(b"250"), end


def _greeted(port: int, src: str = "127.0.0.1") -> socket.socket:
    s = connect(port, src)
    assert read_reply(s).startswith(b"220 ")
    return s


def _wait(what: str, predicate: Any) -> None:
    wait_until(predicate, what, interval=0.05)


def _settings(tmp_path: Path, **more: object) -> dict[str, object]:
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    return {
        "log.level": "info",
        "smtp.max_message_size": 10_000,
        "directory.default": "static",
        "directory.static_file": str(users),
        "directory.static_check_interval": 3600.0,  # only the reload reads it again
        "tarpit.suspect_delay": 0,
        "admission.deny_networks": ["192.0.2.0/24"],
    } | more


def test_new_sessions_get_the_new_settings_and_old_ones_keep_theirs(tmp_path: Path) -> None:
    with served(tmp_path, **_settings(tmp_path)) as srv:
        held = srv.fill_local()  # sessions in the supervisor, opened before the reload
        in_worker = _greeted(srv.port)
        _wait("a session in a worker", lambda: srv.sessions() == (2, [1, 0]))
        _edit(tmp_path, "max_message_size = 10000", "max_message_size = 20000")
        (tmp_path / "users").write_text("alice@example.test\ncarol@example.test\n")
        _edit(tmp_path, '["192.0.2.0/24"]', '["192.0.2.0/24", "127.0.0.66/32"]')
        line = _hup(srv, tmp_path, "status=ok")
        assert "smtp.max_message_size" in line and "admission.deny_networks" in line, line
        # sessions in flight keep the limit, the directory they started with
        _old(held[0])
        _old(in_worker)
        # a new session while the supervisor's places are taken: a worker's
        fresh = _greeted(srv.port)
        _wait("a second session in a worker", lambda: sum(srv.sessions()[1]) == 2)
        _new(fresh)
        for s in [*held, in_worker, fresh]:
            s.close()
        _wait("no session open", lambda: srv.sessions() == (0, [0, 0]))
        # from a new address: 127.0.0.1 delivered, and a known client goes to the clean lane
        here = _greeted(srv.port, "127.0.0.68")
        _wait("a session in the supervisor", lambda: srv.sessions() == (1, [0, 0]))
        _new(here)
        here.close()
        # the new deny list holds at admission
        assert refused_at_connect(srv.port, "127.0.0.66").startswith(b"421 4.7.0")
        assert srv.proc.poll() is None


def test_a_bad_file_is_refused_and_the_old_configuration_stays(tmp_path: Path) -> None:
    with served(tmp_path, **_settings(tmp_path)) as srv:
        conf = (tmp_path / "mailmoat.toml").read_text()
        _edit(tmp_path, "max_message_size = 10000", "max_message_size = -1")
        line = _hup(srv, tmp_path, "status=refused")
        assert "smtp.max_message_size" in line, line
        assert "error" in line.split()[1], line
        (tmp_path / "mailmoat.toml").write_text("[smtp\n")
        _hup(srv, tmp_path, "status=refused")
        # a valid file with a directory that cannot be loaded: refused when it is built
        (tmp_path / "mailmoat.toml").write_text(conf)
        (tmp_path / "users").write_text("# nobody\n")
        line = _hup(srv, tmp_path, "status=refused")
        assert "no address in the file" in line, line
        with _greeted(srv.port) as s:
            _old(s)
        assert srv.proc.poll() is None


def test_a_missing_certificate_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, ("mx.test",))
    tls = {"server.tls_cert": str(cert), "server.tls_key": str(key)}
    with served(tmp_path, **_settings(tmp_path, **tls)) as srv:
        _edit(tmp_path, str(cert), str(tmp_path / "gone.pem"))
        line = _hup(srv, tmp_path, "status=refused")
        assert "server.tls_cert" in line, line
        assert _served_cert(srv.port) == _der(cert)


def test_a_changed_listener_needs_a_restart_and_the_old_one_serves(tmp_path: Path) -> None:
    with served(tmp_path, **_settings(tmp_path)) as srv:
        pids = srv.worker_pids()
        other = free_port()
        _edit(tmp_path, f'"127.0.0.1:{srv.port}"', f'"127.0.0.1:{other}"')
        line = _hup(srv, tmp_path, "status=ok")
        assert "need_restart=server.listen" in line, line
        with _greeted(srv.port) as s:
            _old(s)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", other), timeout=5).close()
        # several in a row, to the main process and to the whole group (signals that arrive
        # together may merge into one): they reload, nothing dies
        before = len(_reload_lines(tmp_path))
        for _ in range(3):
            srv.proc.send_signal(signal.SIGHUP)
        os.killpg(srv.proc.pid, signal.SIGHUP)
        _wait("a reload", lambda: len(_reload_lines(tmp_path)) > before)
        _hup(srv, tmp_path, "status=ok")
        assert all("status=ok" in line for line in _reload_lines(tmp_path)[before:])
        assert srv.proc.poll() is None and srv.worker_pids() == pids
        srv.send()


def test_one_process_reloads_too(tmp_path: Path) -> None:
    """server.workers = 1: the gateway itself reloads."""
    port = free_port()
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    conf = tmp_path / "mailmoat.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{port}"]\nhostname = "mx.test"\nworkers = 1\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{tmp_path / "md"}"\n'
        f'[directory]\ndefault = "static"\nstatic_file = "{users}"\n'
        "static_check_interval = 3600.0\n[smtp]\nmax_message_size = 10000\n"
        "[dns]\nchecks = false\n[tarpit]\nsuspect_delay = 0\n"
    )
    with open(tmp_path / "mailmoat.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait("listening", lambda: " listening " in _log(tmp_path))
            old = _greeted(port)
            _edit(tmp_path, "max_message_size = 10000", "max_message_size = 20000")
            users.write_text("alice@example.test\ncarol@example.test\n")
            proc.send_signal(signal.SIGHUP)
            _wait("the reload", lambda: "reload status=ok" in _log(tmp_path))
            _old(old)
            with _greeted(port) as s:
                _new(s)
            old.close()
            assert proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(30)


def _der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def _starttls(s: socket.socket) -> bytes:
    """STARTTLS on a greeted connection; the certificate the server showed (DER). The
    connection is closed after."""
    assert _command(s, b"EHLO client.test").startswith(b"250")
    assert _command(s, b"STARTTLS").startswith(b"220")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with ctx.wrap_socket(s) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _served_cert(port: int) -> bytes:
    with _greeted(port) as s:
        return _starttls(s)


def test_a_renewed_certificate_is_served_after_a_reload(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, ("mx.test",))
    first = _der(cert)
    tls = {"server.tls_cert": str(cert), "server.tls_key": str(key)}
    with served(tmp_path, **_settings(tmp_path, **tls)) as srv:
        held = srv.fill_local()
        in_worker = _greeted(srv.port)
        _wait("a session in a worker", lambda: srv.sessions() == (2, [1, 0]))
        self_signed_cert(tmp_path, ("mx.test",))  # renewed in place, as certbot does
        renewed = _der(cert)
        assert renewed != first
        _hup(srv, tmp_path, "status=ok")
        fresh = _greeted(srv.port)  # a worker's: the supervisor's places are taken
        _wait("a second session in a worker", lambda: sum(srv.sessions()[1]) == 2)
        assert _starttls(fresh) == renewed
        # sessions opened before keep the context they started with
        assert _starttls(held[0]) == first
        assert _starttls(in_worker) == first
        held[1].close()
        _wait("no session open", lambda: srv.sessions() == (0, [0, 0]))
        assert _served_cert(srv.port) == renewed  # the supervisor's
