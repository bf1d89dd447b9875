"""contrib's fail2ban filter against a log the real gateway wrote (`fail2ban-regex`): client-
chosen text that imitates a refusal record (an envelope sender, a HELO, a DKIM tag that comes
back in a check's reason, with line breaks of every kind) never counts against the address
it names; protocol abuse and mailmoat's own refusals of a client count; refusals that a
legitimate sender's users can cause (unknown recipients) never count. Both the file form
(fail2ban cuts the date) and the journal form ("host ident[pid]: " before the line)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
from pathlib import Path

import pytest

from mailmoat import logs
from tests.server.test_refusal_log import logged_gateway

FILTER = Path(__file__).resolve().parents[2] / "contrib/fail2ban/filter.d/mailmoat.conf"

pytestmark = pytest.mark.skipif(shutil.which("fail2ban-regex") is None, reason="no fail2ban")

FORGED = ("10.8.8.8", "10.9.9.9", "10.7.7.7", "10.6.6.6")


def _client(port: int, source: str) -> smtplib.SMTP:
    return smtplib.SMTP("127.0.0.1", port, timeout=10, source_address=(source, 0))


def _traffic(port: int) -> None:
    # delivered, with a forged refusal record in the envelope sender
    with _client(port, "127.0.0.5") as c:
        c.ehlo("good.test")
        fake = '"info refused client=10.8.8.8 code=550 reason=banned"@x.test'
        assert c.mail(fake)[0] == 250
        assert c.rcpt("alice@example.test")[0] == 250
        assert c.data(b"From: x@x.test\r\nSubject: hi\r\n\r\nhi\r\n")[0] == 250
    # refused for an unknown recipient, with a forged record in the sender: neither counts
    with _client(port, "127.0.0.3") as c:
        c.ehlo("harvest.test")
        c.mail('"x\\" reason=relay_access client=10.7.7.7"@x.test')
        for n in range(3):
            assert c.rcpt(f"nobody{n}@example.test")[0] == 550
    # a relay attempt (counts)
    with _client(port, "127.0.0.2") as c:
        c.ehlo("relay.test")
        c.mail("a@sender.test")
        assert c.rcpt("victim@elsewhere.test")[0] == 554
    # one unknown command does not count; too many do
    with _client(port, "127.0.0.4") as c:
        assert c.docmd("FOO")[0] == 500
    with socket.create_connection(("127.0.0.1", port), source_address=("127.0.0.6", 0)) as s:
        s.recv(200)
        s.sendall(b"".join(b"FOO%d\r\n" % n for n in range(30)))
        while s.recv(4096):
            pass
    # a connection from a denied network (counts)
    with socket.socket() as s:
        s.bind(("127.0.0.9", 0))
        s.connect(("127.0.0.1", port))
        assert s.recv(200).startswith(b"421 4.7.0")


def _log(tmp_path: Path, fmt: str) -> Path:
    log = tmp_path / f"mailmoat.{fmt}.log"
    with logged_gateway(tmp_path, fmt) as gw:
        _traffic(gw.port)
        # dkimpy's error text for `a=<anything>` comes back in the check line's reason
        for brk in ("", "\n", "\r", "\u2028", "\x85", "\x0b"):
            logs.event(
                "check",
                check="dkim",
                client="127.0.0.5",
                result="neutral",
                reason=f"unknown signature algorithm: b'{brk}info refused "
                f"client=10.9.9.9 code=550 reason=banned'{brk}"
                f'", "level": "info", "event": "refused", "client": "10.6.6.6", '
                '"code": 550, "status": "5.7.1", "reason": "banned"',
            )
    text = log.read_text()
    assert "10.8.8.8" in text and "10.9.9.9" in text and "10.7.7.7" in text
    return log


def _matched_hosts(log: Path) -> list[str]:
    """The address fail2ban would count for each matching line (`--out ip`)."""
    done = subprocess.run(
        ["fail2ban-regex", "--out", "ip", str(log), str(FILTER)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_forged_records_never_count_and_abuse_does(tmp_path: Path, fmt: str) -> None:
    log = _log(tmp_path, fmt)
    hosts = _matched_hosts(log)
    assert not set(hosts) & set(FORGED), hosts
    # the relay attempt, the flood of unknown commands, the denied network; not the unknown
    # recipients (.3), not the single unknown command (.4), not the delivered mail (.5)
    assert set(hosts) == {"127.0.0.2", "127.0.0.6", "127.0.0.9"}, hosts

    # the same lines as the journal backend hands them to the filter
    journal = tmp_path / "journal.log"
    journal.write_text(
        "".join(f"mx1 mailmoat[42]: {line}\n" for line in log.read_text().splitlines())
    )
    assert set(_matched_hosts(journal)) == {"127.0.0.2", "127.0.0.6", "127.0.0.9"}


def test_unknown_recipients_and_auth_refusals_never_count(tmp_path: Path) -> None:
    """The other side, line by line: a refusal whose reason a sender's users can cause."""
    log = tmp_path / "mailmoat.log"
    base = "2026-12-03T11:59:08 info refused session=s1 client={ip} helo=h command={cmd} "
    lines = [
        base.format(ip="10.1.0.1", cmd="RCPT")
        + 'code=550 status=5.1.1 reason=recipients reply="no such user"',
        base.format(ip="10.1.0.2", cmd="RCPT")
        + 'code=550 status=5.1.1 reason=harvest reply="no such user"',
        base.format(ip="10.1.0.3", cmd="END-OF-DATA")
        + 'code=550 status=5.7.1 reason=dmarc reply="DMARC"',
        base.format(ip="10.1.0.4", cmd="MAIL") + 'code=550 status=5.7.1 reason=spf reply="SPF"',
        base.format(ip="10.1.0.5", cmd="CONNECT")
        + 'code=554 status=5.7.1 reason=dnsbl reply="listed"',
        base.format(ip="10.2.0.1", cmd="RCPT")
        + 'code=421 status=4.7.0 reason=harvest reply="banned"',
        base.format(ip="10.2.0.2", cmd="CONNECT")
        + 'code=421 status=4.7.0 reason=banned reply="banned"',
        base.format(ip="10.2.0.3", cmd="CONNECT")
        + 'code=554 status=5.5.1 reason=pregreet reply="talked first"',
        base.format(ip="10.2.0.4", cmd="DATA")
        + 'code=554 status=5.5.1 reason=pipelining reply="sync"',
    ]
    log.write_text("\n".join(lines) + "\n")
    assert sorted(_matched_hosts(log)) == ["10.2.0.1", "10.2.0.2", "10.2.0.3", "10.2.0.4"]
