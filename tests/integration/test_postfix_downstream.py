"""mailmoat relaying to a real Postfix as the internal mail server: what Postfix stores is what
the client sent, plus exactly one Received: header from mailmoat.

Postfix stores LF line ends in the Maildir; ``DeliveredMessage.content_crlf`` puts CRLF back, and
``content`` already drops Postfix's own trace headers (Return-Path, X-Original-To,
Delivered-To, its Received).
"""

from __future__ import annotations

import os
import re
import smtplib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.host import run_with_tty, wait_until
from tests.support.peer_clients import smtp_source, swaks
from tests.support.raw_client import RawClient
from tests.support.tls import self_signed_cert
from tests.support.trace import split_mailmoat_received

pytestmark = pytest.mark.peers

LONG = b"x" * 998  # 998 octets + CRLF: the longest line RFC 5321 allows

TRICKY = (
    b"From: Sender <s@sender.test>\r\n"
    b"To: Alice <alice@example.test>, Bob <bob@example.test>\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?= arrives intact\r\n"
    b"Message-ID: <intact-1@sender.test>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"X-Folded: first part\r\n"
    b"\tsecond part\r\n"
    b"\r\n"
    b".\r\n"
    b".leading dot\r\n"
    b"..two leading dots\r\n"
    b"...\r\n"
    b". \r\n"
    b"caf\xc3\xa9 \xe2\x82\xac na\xc3\xafve 8-bit, and raw octets \x80\xfe\xff\r\n"
    + LONG
    + b"\r\n."
    + LONG[1:]  # a dot line of 998 octets: 999 on the wire after stuffing, still legal
    + b"\r\n"
    b"trailing blanks   \t\r\n"
    b"\r\n"
    b"\r\n"
    b"From the start of a line (no > quoting in a Maildir)\r\n"
    b"last line\r\n"
)


def _gateway(tmp_path: Path, port: int, **overrides):
    return running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{port}", **overrides}
    )


def _only_mailmoat_added_received(delivered: bytes, sent: bytes) -> bytes:
    received, rest = split_mailmoat_received(delivered)
    assert rest == sent
    return received


def test_8bit_dots_and_long_lines_arrive_byte_for_byte(tmp_path: Path, postfix_downstream) -> None:
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port) as gw, smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
        c.ehlo("client.sender.test")
        assert c.has_extn("8bitmime")
        refused = c.sendmail(
            "s@sender.test",
            ["alice@example.test", "bob@example.test"],
            TRICKY,
            mail_options=["BODY=8BITMIME"],
        )
        assert refused == {}
    (alice,) = pf.wait_for_messages("alice")
    (bob,) = pf.wait_for_messages("bob")
    for msg, rcpt in ((alice, "alice@example.test"), (bob, "bob@example.test")):
        assert msg.envelope_sender == "s@sender.test"
        assert msg.envelope_recipient == rcpt
        received = _only_mailmoat_added_received(msg.content_crlf, TRICKY)
        assert received.startswith(b"Received: from client.sender.test ([127.0.0.1])\r\n")
        assert b"\tfor <" not in received  # two recipients: no "for" clause
    assert alice.content == bob.content  # one transaction, two identical copies
    assert pf.log_text().count(" client=localhost[127.0.0.1]") == 1


def _send_exactly(port: int, rcpt: str, content: bytes) -> None:
    """One transaction with exactly ``content`` (dot-stuffed by the caller) between 354 and
    the final dot: swaks and smtplib both add a CRLF to an empty message."""
    with RawClient(port) as c:
        c.expect(220)
        c.command(b"EHLO client.sender.test\r\n")
        assert c.command(b"MAIL FROM:<s@sender.test>\r\n").code == 250
        assert c.command(b"RCPT TO:<" + rcpt.encode() + b">\r\n").code == 250
        assert c.command(b"DATA\r\n").code == 354
        r = c.command(content + b".\r\n")
        assert r.code == 250, r
        assert c.command(b"QUIT\r\n").code == 221


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"Subject: headers only\r\nFrom: s@sender.test\r\n", id="header-only"),
        pytest.param(b"Subject: no body\r\nFrom: s@sender.test\r\n\r\n", id="empty-body"),
        pytest.param(b"", id="empty-message"),
        pytest.param(b"\r\n", id="one-empty-line"),
    ],
)
def test_edge_case_messages_arrive_as_sent(
    tmp_path: Path, postfix_downstream, content: bytes
) -> None:
    """Header-only and empty content: mailmoat adds its Received: line and nothing else, and
    Postfix stores what it was given, as a control message sent to Postfix directly shows.
    (Content that starts with a line that is not a header field is refused:
    tests/integration/test_header_block.py.)"""
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port) as gw:
        _send_exactly(gw.port, "alice@example.test", content)
    _send_exactly(pf.port, "bob@example.test", content)  # the control, without mailmoat
    (via_mailmoat,) = pf.wait_for_messages("alice")
    (direct,) = pf.wait_for_messages("bob")

    _, rest = split_mailmoat_received(via_mailmoat.content_crlf)
    assert rest == direct.content_crlf == content


def test_smtputf8_recipient_reaches_postfix(tmp_path: Path, postfix_instance) -> None:
    """A UTF-8 local part (RFC 6531). Postfix 3.7 has smtputf8_enable = yes from compatibility
    level 1 on (the instance runs at 3.6), so mailmoat passes SMTPUTF8 on and Postfix takes it."""
    pf = postfix_instance.downstream(users=("alice", "bob", "jörg"))
    content = "Subject: Grüße\r\nFrom: s@sender.test\r\n\r\nHallo Jörg, schöne Grüße.\r\n".encode()
    with _gateway(tmp_path, pf.port) as gw, smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
        c.ehlo("client.sender.test")
        assert c.has_extn("smtputf8")
        refused = c.sendmail(
            "s@sender.test",
            ["jörg@example.test"],
            content,
            mail_options=["SMTPUTF8", "BODY=8BITMIME"],
        )
        assert refused == {}
    (msg,) = pf.wait_for_messages("jörg")
    assert msg.envelope_recipient == "jörg@example.test"
    received = _only_mailmoat_added_received(msg.content_crlf, content)
    assert b" with UTF8SMTP id " in received
    assert "for <jörg@example.test>".encode() in received
    # Postfix too says it received the message over SMTPUTF8
    assert b"(Postfix) with UTF8SMTP id" in msg.raw
    assert pf.messages("alice") == []


@contextmanager
def _learned(gw) -> Iterator[None]:
    """Once the gateway has reached Postfix and knows its EHLO extensions (they are fixed for
    a client session when it connects)."""
    wait_until(
        lambda: gw.call(lambda: gw.gateway.delivery.capabilities) is not None,
        10,
        "mailmoat to learn the downstream's extensions",
    )
    yield


def test_smtputf8_not_offered_when_postfix_lacks_it(tmp_path: Path, postfix_instance) -> None:
    """With smtputf8_enable = no downstream, mailmoat does not offer SMTPUTF8: a client that
    uses it anyway is refused at MAIL (never a 5xx after its whole DATA), and Postfix never
    sees a MAIL command for it."""
    pf = postfix_instance.downstream(users=("alice", "jörg"), main_cf={"smtputf8_enable": "no"})
    with (
        _gateway(tmp_path, pf.port) as gw,
        _learned(gw),
        smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c,
    ):
        c.ehlo("client.sender.test")
        assert not c.has_extn("smtputf8")
        assert c.docmd("MAIL FROM:<s@sender.test> SMTPUTF8")[0] == 555
        # the session goes on: a plain ASCII message still gets through
        assert (
            c.sendmail("s@sender.test", ["alice@example.test"], b"Subject: ok\r\n\r\nok\r\n") == {}
        )
    pf.wait_for_messages("alice")
    assert pf.messages("jörg") == []
    log = pf.log_text()
    assert log.count(" client=localhost[127.0.0.1]") == 1  # only the ASCII message


def _fill(out: bytearray, upto: int) -> None:
    """Append CRLF-terminated filler lines until ``out`` is exactly ``upto`` octets long."""
    n = upto - len(out)
    assert n >= 2
    while n:
        k = min(n, 900)
        if n - k == 1:
            k -= 2
        out += b"y" * (k - 2) + b"\r\n"
        n -= k


def _dots_on_chunk_edges() -> bytes:
    """~600 kB: past server.spool_memory, so the message is spooled to a file and read back in
    64 KiB chunks (message.CHUNK); line-start dots sit right on those chunk edges."""
    out = bytearray(b"From: s@sender.test\r\nSubject: dots on the edges\r\n\r\n")
    _fill(out, 65536)  # chunk 2 starts with a dot
    out += b".first chunk edge\r\n"
    _fill(out, 131070)  # chunk 2 ends in CR, chunk 3 starts with LF and a dot
    out += b"x\r\n.second chunk edge\r\n"
    _fill(out, 196607)  # a line that is only a dot: the last octet of chunk 3
    out += b".\r\n"
    _fill(out, 262143)  # ".." (a stuffed line when sent) ends chunk 4 and starts chunk 5
    out += b"..\r\n"
    while len(out) < 600_000:
        out += b"." + b"z" * 70 + b"\r\n"
    return bytes(out)


def test_large_spooled_message_with_dots_on_chunk_edges(tmp_path: Path, postfix_downstream) -> None:
    """A line that is only "." inside the content must reach Postfix stuffed, or Postfix would
    end the message there (truncation, or the rest read as commands)."""
    pf = postfix_downstream
    content = _dots_on_chunk_edges()
    assert content[65536:65537] == b"." and content[131071:131074] == b"\r\n."
    assert content[196605:196610] == b"\r\n.\r\n"
    with _gateway(tmp_path, pf.port) as gw:
        rc, transcript = swaks(
            gw.port, "--from", "s@sender.test", "--to", "alice@example.test", data=content
        )
        assert rc == 0, transcript[-2000:]
    (msg,) = pf.wait_for_messages("alice")
    _only_mailmoat_added_received(msg.content_crlf, content)
    assert "improper command pipelining" not in pf.log_text()


def test_pooled_connection_survives_refusals_and_a_postfix_restart(
    tmp_path: Path, postfix_downstream
) -> None:
    """The pool against a real Postfix: a good message, one refused for an unknown user (the
    connection is dropped then), a good one, Postfix down (4xx, nothing lost: the client
    keeps it), Postfix back on the same port, a good one. Alice ends with exactly the three
    messages that got a 250."""
    pf = postfix_downstream

    def send(n: int, to: str) -> tuple[int, str]:
        return swaks(
            gw.port, "--from", "s@sender.test", "--to", to,
            data=b"Subject: message %d\r\n\r\nbody %d\r\n" % (n, n),
        )  # fmt: skip

    with _gateway(tmp_path, pf.port, **{"relay.connect_timeout": 2.0}) as gw:
        assert send(1, "alice@example.test")[0] == 0
        rc, transcript = send(2, "alice@example.test,carol@example.test")
        assert rc == 26 and "<** 550 5.1.1 <carol@example.test>" in transcript, transcript
        assert send(3, "alice@example.test")[0] == 0
        pf.wait_for_messages("alice", 2)

        pf.stop()
        rc, transcript = send(4, "alice@example.test")
        assert rc == 26 and "<** 451 4.4." in transcript, transcript

        pf.start()
        rc, transcript = send(5, "alice@example.test")
        assert rc == 0, transcript + pf.log_tail()
        msgs = pf.wait_for_messages("alice", 3)
    time.sleep(0.3)
    subjects = [m.header("Subject") for m in pf.messages("alice")]
    assert subjects == ["message 1", "message 3", "message 5"], subjects
    assert len(msgs) == 3


def test_many_clients_share_a_bounded_pool_to_postfix(tmp_path: Path, postfix_downstream) -> None:
    """200 messages from 20 parallel smtp-source sessions, through at most 4 downstream
    connections (invariant 4): every message lands once, Postfix never sees a 5th connection."""
    pf = postfix_downstream
    # no connection is retired mid-run, so Postfix's log order cannot blur the count
    limits = {
        "relay.pool_size": 4,
        "relay.max_messages_per_connection": 1000,
        # 200 connections from one address in seconds: the admission limits are tested elsewhere
        "admission.max_rate": 0,
        "admission.max_per_ip": 100,
    }
    with _gateway(tmp_path, pf.port, **limits) as gw:
        rc, output = smtp_source(gw.port, messages=200, sessions=20, size=2000)
        assert rc == 0, output
        msgs = pf.wait_for_messages("alice", 200, timeout=30)
    assert len(msgs) == 200
    assert len({m.header("Message-Id") for m in msgs}) == 200
    open_now = peak = 0
    for line in pf.log_text().splitlines():
        if "]: connect from " in line:
            open_now += 1
            peak = max(peak, open_now)
        elif "]: disconnect from " in line:
            open_now -= 1
    assert 1 <= peak <= 4, pf.log_text()


@pytest.mark.parametrize(
    ("main_cf", "keyword", "command", "content", "expected"),
    [
        pytest.param(
            {"smtpd_discard_ehlo_keywords": "8bitmime"},
            "8bitmime",
            "MAIL FROM:<s@sender.test> BODY=8BITMIME",
            None,
            (555, b"5.5.4 Unsupported or malformed MAIL/RCPT parameter"),
            id="no-8bitmime",
        ),
        pytest.param(
            {"message_size_limit": "2000"},
            None,
            "MAIL FROM:<s@sender.test> SIZE=1500",
            None,
            (552, b"5.3.4 Message size exceeds fixed limit of 976 octets"),
            id="size-declared",
        ),
        pytest.param(
            {"message_size_limit": "2000"},
            None,
            "MAIL FROM:<s@sender.test>",
            b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 40,
            (552, b"5.3.4 Message size exceeds fixed limit of 976 octets"),
            id="size-undeclared",
        ),
    ],
)
def test_downstream_capability_mismatch_is_refused_in_session(
    tmp_path: Path, postfix_instance, main_cf, keyword, command, content, expected
) -> None:
    """What Postfix says it cannot take is not offered, and refused to the client inside the
    session as early as it can be decided (no bounce later, invariant 2); Postfix never sees
    a MAIL command for it. SIZE is Postfix's less 1024 octets for mailmoat's header lines."""
    pf = postfix_instance.downstream(main_cf=main_cf)
    with (
        _gateway(tmp_path, pf.port) as gw,
        _learned(gw),
        smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c,
    ):
        c.ehlo("client.sender.test")
        if keyword is not None:
            assert not c.has_extn(keyword)
        if content is None:
            assert c.docmd(command) == expected
        else:
            assert c.docmd(command)[0] == 250
            assert c.rcpt("alice@example.test")[0] == 250
            assert c.data(content) == expected
    time.sleep(0.2)
    assert pf.messages("alice") == []
    assert " client=localhost" not in pf.log_text()


def test_postfix_closing_an_idle_pooled_connection_is_harmless(
    tmp_path: Path, postfix_instance
) -> None:
    """Postfix drops a pooled connection that idles past its smtpd_timeout (with a 421); the
    next message goes over a new connection and gets its 250."""
    pf = postfix_instance.downstream(main_cf={"smtpd_timeout": "1s"})
    with _gateway(tmp_path, pf.port) as gw:
        assert swaks(gw.port, "--to", "alice@example.test")[0] == 0
        pf.wait_for_log(r"timeout after END-OF-MESSAGE from localhost", timeout=5)
        rc, transcript = swaks(gw.port, "--to", "alice@example.test")
        assert rc == 0, transcript
        pf.wait_for_messages("alice", 2)
    assert pf.log_text().count("]: connect from localhost") == 2


def _add_tlsmgr(pf) -> None:
    """smtpd needs the tlsmgr service for TLS (entropy, session cache); the fixture's
    master.cf has none, so add it and reload (a reload re-reads master.cf)."""
    master_cf = pf.config_dir / "master.cf"
    master_cf.write_text(
        master_cf.read_text() + "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
    )
    past = time.time() - 10  # see PostfixInstance._write_config: avoid the "being edited" wait
    os.utime(master_cf, (past, past))
    rc, out = run_with_tty(["postfix", "-c", str(pf.config_dir), "reload"], 10)
    assert rc == 0, out
    wait_until(lambda: (pf.queue_dir / "private" / "tlsmgr").exists(), 5, "tlsmgr socket")


def test_starttls_to_postfix_verified(tmp_path: Path, postfix_instance) -> None:
    """relay.starttls = "require": an untrusted certificate gives the client a 4xx; with the
    downstream's certificate as the CA the message travels encrypted (Postfix records ESMTPS)."""
    cert, key = self_signed_cert(tmp_path)
    pf = postfix_instance.downstream(
        main_cf={
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(cert),
            "smtpd_tls_key_file": str(key),
            "smtpd_tls_loglevel": "1",
        }
    )
    _add_tlsmgr(pf)
    # Verified against the system store, the self-signed certificate fails: 4xx, not plaintext.
    with _gateway(tmp_path, pf.port, **{"relay.starttls": "require"}) as gw:
        rc, transcript = swaks(gw.port, "--to", "alice@example.test")
        assert rc == 26, transcript
        assert "<** 451 4.7.5 Downstream TLS failure, try again later" in transcript
    assert " client=localhost" not in pf.log_text()

    tls = {"relay.starttls": "require", "relay.tls_ca_file": str(cert)}
    with _gateway(tmp_path, pf.port, **tls) as gw:
        rc, transcript = swaks(gw.port, "--to", "alice@example.test", data=TRICKY)
        assert rc == 0, transcript + pf.log_tail()
    (msg,) = pf.wait_for_messages("alice")
    _only_mailmoat_added_received(msg.content_crlf, TRICKY)
    assert b"(Postfix) with ESMTPS id " in msg.raw
    assert re.search(
        r"TLS connection established from localhost\[127\.0\.0\.1\]: TLSv1\.[23] ", pf.log_text()
    )


def test_starttls_required_but_not_offered_gives_4xx(tmp_path: Path, postfix_downstream) -> None:
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port, **{"relay.starttls": "require"}) as gw:
        rc, transcript = swaks(gw.port, "--to", "alice@example.test")
    assert rc == 26, transcript
    assert "<** 451 4.7.5 Downstream TLS failure, try again later" in transcript
    time.sleep(0.2)
    assert pf.messages("alice") == []
    assert " client=localhost" not in pf.log_text()
