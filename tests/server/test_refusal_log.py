"""Every refusal is logged at info, at connect, at each command and at the end of data, with
the session, client, HELO, sender, recipient, reply code, enhanced code and the reason (the
check that refused, or the engine's token), in text and JSON; and contrib's fail2ban filter
finds exactly the protocol abuse and relay attempts in a log the gateway wrote
(`fail2ban-regex`)."""

from __future__ import annotations

import contextlib
import json
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailmoat import logs
from mailmoat.config import LogSettings
from tests.support.gateway import RunningGateway, running_gateway

FILTER = Path(__file__).resolve().parents[2] / "contrib/fail2ban/filter.d/mailmoat.conf"


def _client(port: int, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0))


def _traffic(tmp_path: Path, port: int) -> None:
    """One of each: a relay attempt (.2), an unknown recipient (.3), an unknown command
    (.4), a message refused at the end of data (.6), mail that is delivered (.5), and a
    connection from a denied network (.9)."""
    with _client(port, "127.0.0.2") as c:
        c.ehlo("relay.test")
        c.mail("a@sender.test")
        assert c.rcpt("victim@elsewhere.test")[0] == 554
    with _client(port, "127.0.0.3") as c:
        c.ehlo("harvest.test")
        c.mail("b@sender.test")
        assert c.rcpt("nobody@example.test")[0] == 550
    with _client(port, "127.0.0.4") as c:
        assert c.docmd("FOO")[0] == 500
    with _client(port, "127.0.0.6") as c:
        c.ehlo("big.test")
        c.mail("big@sender.test")
        c.rcpt("alice@example.test")
        assert c.data(b" leading space\r\n\r\nbody\r\n")[0] == 554
    with _client(port, "127.0.0.5") as c:
        assert (
            c.sendmail("good@sender.test", ["alice@example.test"], b"Subject: ok\r\n\r\nx\r\n")
            == {}
        )
    with socket.socket() as s:
        s.bind(("127.0.0.9", 0))
        s.connect(("127.0.0.1", port))
        assert s.recv(200).startswith(b"421 4.7.0")


@contextlib.contextmanager
def logged_gateway(tmp_path: Path, fmt: str, **extra: object) -> Iterator[RunningGateway]:
    """A gateway (alice@example.test the only recipient, 127.0.0.9 denied; `extra` settings)
    whose log, in format `fmt`, goes to tmp_path/mailmoat.<fmt>.log while the block runs."""
    static = tmp_path / "recipients"
    static.write_text("alice@example.test\n")
    settings = {
        "admission.deny_networks": ["127.0.0.9/32"],
        "directory.default": "static",
        "directory.static_file": str(static),
        **extra,
    }
    with (tmp_path / f"mailmoat.{fmt}.log").open("w") as out:
        logs.setup(LogSettings(format=fmt), out)
        try:
            with running_gateway(tmp_path / "md", **settings) as gw:
                yield gw
        finally:
            logs.setup(LogSettings())


def _run(tmp_path: Path, fmt: str) -> Path:
    with logged_gateway(tmp_path, fmt) as gw:
        _traffic(tmp_path, gw.port)
    return tmp_path / f"mailmoat.{fmt}.log"


def _refusals(log: Path, fmt: str) -> list[dict[str, object]]:
    lines = log.read_text().splitlines()
    if fmt == "json":
        docs = [json.loads(line) for line in lines]
        return [d for d in docs if d["event"] == "refused"]
    found = []
    for line in lines:
        _, level, event, rest = line.split(" ", 3)
        if event == "refused":
            assert level == "info"
            fields = dict(p.split("=", 1) for p in rest.split(" ") if "=" in p and '"' not in p)
            fields["reply"] = rest.split('reply="', 1)[1].rstrip('"')
            found.append(fields)
    return found


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_refusal_is_one_info_line_with_its_reason(tmp_path: Path, fmt: str) -> None:
    refused = _refusals(_run(tmp_path, fmt), fmt)
    by_client = {str(r["client"]): r for r in refused}
    assert set(by_client) == {"127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.6", "127.0.0.9"}
    relay = by_client["127.0.0.2"]
    assert relay["helo"] == "relay.test" and relay["sender"] == "<a@sender.test>"
    assert relay["rcpt"] == "<victim@elsewhere.test>" and relay["command"] == "RCPT"
    assert str(relay["code"]) == "554" and relay["status"] == "5.7.1"
    assert relay["reason"] == "relay_access" and relay["reply"] == "Relay access denied"
    assert relay["session"]
    unknown = by_client["127.0.0.3"]
    assert (str(unknown["code"]), unknown["status"], unknown["reason"]) == (
        "550",
        "5.1.1",
        "recipients",
    )
    assert unknown["rcpt"] == "<nobody@example.test>"
    assert by_client["127.0.0.4"]["reason"] == "unknown_command"
    data = by_client["127.0.0.6"]
    assert data["command"] == "END-OF-DATA" and data["reason"] == "header_defect"
    assert str(data["code"]) == "554" and data["status"] == "5.6.0"
    connect = by_client["127.0.0.9"]
    assert connect["command"] == "CONNECT" and connect["reason"] == "denied"
    assert len(str(connect["session"])) == 12 and connect["session"] != relay["session"]
    assert str(connect["code"]) == "421"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_refusals_name_the_envelope_they_refuse(tmp_path: Path, fmt: str) -> None:
    """A MAIL refusal names the sender it refused (not the last transaction's); one at the end
    of data names the command and every recipient, also when the engine refused the message
    (too big) or delivery failed (a broken Maildir: 451, logged, no strike)."""
    body = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 50
    with logged_gateway(tmp_path, fmt, **{"smtp.max_message_size": 2048}) as gw:
        with _client(gw.port, "127.0.0.7") as c:
            assert c.sendmail("first@sender.test", ["alice@example.test"], b"\r\nx\r\n") == {}
            assert c.mail("second@sender.test", ["SIZE=999999"])[0] == 552
        with _client(gw.port, "127.0.0.8") as c:
            c.ehlo("big.test")
            c.mail("big@sender.test")
            c.rcpt("alice@example.test")
            c.rcpt("postmaster@example.test")
            assert c.data(body)[0] == 552
        (tmp_path / "md" / "tmp").rmdir()
        (tmp_path / "md" / "tmp").write_text("not a folder")
        with _client(gw.port, "127.0.0.10") as c:
            c.ehlo("lost.test")
            c.mail("lost@sender.test")
            c.rcpt("alice@example.test")
            assert c.data(b"Subject: s\r\n\r\nx\r\n")[0] == 451
    by_client = {str(r["client"]): r for r in _refusals(tmp_path / f"mailmoat.{fmt}.log", fmt)}
    mail = by_client["127.0.0.7"]
    assert (mail["command"], mail["sender"], mail["reason"]) == (
        "MAIL",
        "<second@sender.test>",
        "message_too_big",
    )
    big = by_client["127.0.0.8"]
    assert (big["command"], str(big["code"]), big["status"]) == ("END-OF-DATA", "552", "5.3.4")
    assert big["sender"] == "<big@sender.test>" and big["helo"] == "big.test"
    assert big["rcpt"] == "<alice@example.test>,<postmaster@example.test>"
    lost = by_client["127.0.0.10"]
    assert (lost["command"], str(lost["code"]), lost["reason"]) == (
        "END-OF-DATA",
        "451",
        "delivery",
    )
    assert lost["sender"] == "<lost@sender.test>" and lost["rcpt"] == "<alice@example.test>"


@pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="fail2ban not installed")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_fail2ban_filter_matches_the_abusers_only(tmp_path: Path, fmt: str) -> None:
    log = _run(tmp_path, fmt)
    done = subprocess.run(
        ["fail2ban-regex", "--print-all-matched", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    section = done.stdout.split("Matched line(s):", 1)[1].split("Missed line(s):", 1)[0]
    matched = [line for line in section.splitlines() if line.startswith("|  ")]
    hosts = {
        h
        for h in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.9")
        for line in matched
        if f"client={h} " in line or f'"client": "{h}"' in line
    }
    # the relay attempt and the denied network; not the unknown recipient, the single
    # unknown command or the refused content (tests/server/test_fail2ban_filter.py)
    assert hosts == {"127.0.0.2", "127.0.0.9"}, section
    assert len(matched) == 2 and " 2 matched" in done.stdout, done.stdout
