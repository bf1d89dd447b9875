"""The gateway end to end on loopback with a real client (smtplib, raw sockets), delivering to
its embedded default, the local Maildir."""

from __future__ import annotations

import re
import smtplib
import socket
import ssl
import time
from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.tls import self_signed_cert
from tests.support.waiting import DEADLINE


def _maildir_files(maildir: Path) -> list[Path]:
    new = maildir / "new"
    return sorted(new.iterdir()) if new.exists() else []


_FINAL_LINE = re.compile(rb"(?m)^[0-9]{3} ")
"""The last line of a reply."""


def _talk(port: int, *lines: bytes, read_timeout: float = DEADLINE) -> bytes:
    """Send raw bytes (each item as one write, once the server has answered the one before)
    and return everything the server said."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as s:
        got = b""
        open_ = True

        def answered(replies: int) -> None:
            """Read until the server said more than `replies` replies, or closed."""
            nonlocal got, open_
            while open_ and len(_FINAL_LINE.findall(got)) <= replies:
                chunk = s.recv(65536)
                open_ = bool(chunk)
                got += chunk

        answered(0)  # the greeting
        for line in lines:
            if not open_:
                break
            replies = len(_FINAL_LINE.findall(got))
            s.sendall(line)
            answered(replies)
        if open_:
            s.shutdown(socket.SHUT_WR)
            while chunk := s.recv(65536):
                got += chunk
    return got


MESSAGE = (
    b"From: Bob <bob@sender.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b".a line that starts with a dot\r\n"
    b"..two dots\r\n"
    b"\xc3\xa9 8-bit text\r\n"
    b"last line\r\n"
)


def test_message_lands_in_maildir_intact_with_received_header(tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    with running_gateway(maildir) as gw, smtplib.SMTP("127.0.0.1", gw.port, timeout=5) as c:
        c.ehlo("client.sender.test")
        assert c.has_extn("pipelining") and c.has_extn("size") and not c.has_extn("chunking")
        refused = c.sendmail("bob@sender.test", ["alice@example.test"], MESSAGE)
        assert refused == {}
    files = _maildir_files(maildir)
    assert len(files) == 1
    data = files[0].read_bytes()
    # Maildir files have LF line ends, as Maildir readers expect.
    assert b"\r" not in data
    head, _, body = data.partition(b"Received: ")
    assert head == b"Return-Path: <bob@sender.test>\nDelivered-To: alice@example.test\n"
    received, _, rest = body.partition(b"\n\t")
    assert received.startswith(b"from client.sender.test ([127.0.0.1])")
    assert rest.startswith(b"by mx.mailmoat.test (mailmoat) with ESMTP id ")
    # After the trace header the client's message follows byte for byte (but for line ends).
    assert data.endswith(MESSAGE.replace(b"\r\n", b"\n"))
    assert data.count(b"Received: ") == 1
    assert not list((maildir / "tmp").iterdir())


def test_foreign_recipient_is_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md") as gw, smtplib.SMTP("127.0.0.1", gw.port) as c:
        c.ehlo("client.test")
        c.mail("spammer@bad.test")
        code, text = c.rcpt("victim@elsewhere.test")
        assert (code, text) == (554, b"5.7.1 Relay access denied")
        assert c.rcpt("alice@example.test")[0] == 250
        assert c.rcpt("alice@EXAMPLE.test")[0] == 250  # domains compare without case
    assert _maildir_files(tmp_path / "md") == []


def test_relay_network_may_send_anywhere(tmp_path: Path) -> None:
    md = tmp_path / "md"
    with running_gateway(md, **{"domains.relay_networks": ["127.0.0.0/8"]}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            assert c.sendmail("a@example.test", ["x@elsewhere.test"], MESSAGE) == {}
    assert len(_maildir_files(md)) == 1


def test_bare_lf_in_message_is_refused_and_nothing_is_stored(tmp_path: Path) -> None:
    md = tmp_path / "md"
    with running_gateway(md) as gw:
        out = _talk(
            gw.port,
            b"EHLO c.test\r\n",
            b"MAIL FROM:<a@b.test>\r\n",
            b"RCPT TO:<alice@example.test>\r\n",
            b"DATA\r\n",
            b"Subject: x\r\n\r\nline\n.\nMAIL FROM:<evil@x.test>\r\n.\r\n",
        )
    assert b"\r\n554 5.6.0 " in out
    assert _maildir_files(md) == []


def test_oversized_message_is_discarded_with_552(tmp_path: Path) -> None:
    md = tmp_path / "md"
    with running_gateway(md, **{"smtp.max_message_size": 2048}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo("c.test")
            assert c.mail("a@b.test", ["SIZE=4096"])[0] == 552
            c.rset()
            c.mail("a@b.test")
            c.rcpt("alice@example.test")
            code, _ = c.data(b"x" * 80 + b"\r\n" + b"y\r\n" * 2000)
            assert code == 552
            # the session goes on after the discarded message
            assert (
                c.sendmail("a@b.test", ["alice@example.test"], b"Subject: ok\r\n\r\nsmall\r\n")
                == {}
            )
    assert len(_maildir_files(md)) == 1


def test_command_timeout_closes_with_421(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"timeouts.greeting": 0.3}) as gw:
        started = time.monotonic()  # the greeting, and its deadline, come after this
        with socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE) as s:
            got = b""
            while chunk := s.recv(4096):
                got += chunk
            elapsed = time.monotonic() - started
    assert got.startswith(b"220 mx.mailmoat.test")
    assert b"421 4.4.2 " in got
    assert elapsed >= 0.3 - 0.01


def test_junk_gets_clear_replies_not_tracebacks(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md") as gw:
        out = _talk(
            gw.port,
            b"EHLO c.test\r\n",
            b"FOO bar\r\n",
            b"MAIL FROM:<no-brackets\r\n",
            b"RCPT TO:<a@example.test>\r\n",
            b"DATA\r\n",
            b"MAIL FROM:<a@b.test> BODY=BINARYMIME\r\n",
            b"A" * 2000 + b"\r\n",
            b"QUIT\r\n",
        )
    codes = [line[:3] for line in out.split(b"\r\n") if line]
    assert codes[0] == b"220"
    assert codes[-1] == b"221"
    assert b"500" in codes and b"501" in codes and b"503" in codes and b"555" in codes
    assert b"Traceback" not in out


def test_http_request_is_refused(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md") as gw:
        out = _talk(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.split(b"\r\n")[1].startswith(b"554 5.7.0")


def test_pipelined_transaction_and_improper_pipelining(tmp_path: Path) -> None:
    md = tmp_path / "md"
    with running_gateway(md) as gw:
        ok = _talk(
            gw.port,
            b"EHLO c.test\r\n",
            b"MAIL FROM:<a@b.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n",
            b"Subject: p\r\n\r\nbody\r\n.\r\nQUIT\r\n",
        )
        bad = _talk(gw.port, b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\n")
    assert [line[:3] for line in ok.split(b"\r\n") if line][-5:] == [
        b"250",
        b"250",
        b"354",
        b"250",
        b"221",
    ]
    assert b"554 5.5.0 Error: SMTP protocol synchronization" in bad
    assert len(_maildir_files(md)) == 1


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path, ("mx.mailmoat.test",))


def test_starttls_then_mail(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    md = tmp_path / "md"
    with running_gateway(md, **{"server.tls_cert": str(cert), "server.tls_key": str(key)}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            c.ehlo("c.test")
            assert c.has_extn("starttls")
            c.starttls(context=_client_tls())
            c.ehlo("c.test")
            assert not c.has_extn("starttls")
            assert c.sendmail("a@b.test", ["alice@example.test"], MESSAGE) == {}
    data = _maildir_files(md)[0].read_bytes()
    assert b"with ESMTPS id" in data


def test_starttls_injection_is_not_executed(tmp_path: Path, tls_files: tuple[Path, Path]) -> None:
    """CVE-2011-0411 class: a command sent in plaintext right after STARTTLS must not be run
    (and so must not produce a reply inside the TLS session)."""
    cert, key = tls_files
    with running_gateway(
        tmp_path / "md", **{"server.tls_cert": str(cert), "server.tls_key": str(key)}
    ) as gw:
        raw = socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE)
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"EHLO c.test\r\n")
        while not f.readline().startswith(b"250 "):
            pass
        raw.sendall(b"STARTTLS\r\nNOOP injected\r\n")
        assert f.readline().startswith(b"220 2.0.0")
        tls = _client_tls().wrap_socket(raw, server_hostname="mx.mailmoat.test")
        tls.settimeout(0.5)
        with pytest.raises(TimeoutError):
            tls.recv(1024)  # nothing is said unasked: the injected NOOP was discarded
        tls.settimeout(DEADLINE)
        tls.sendall(b"MAIL FROM:<a@b.test>\r\n")
        assert tls.recv(1024).startswith(b"503 5.5.1 Error: send HELO/EHLO first")
        tls.sendall(b"QUIT\r\n")
        tls.close()
