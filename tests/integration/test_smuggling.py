"""SMTP smuggling end to end: a client hides a second transaction behind a fake end of data
(SEC Consult, CVE-2023-51764/5/6). The real Postfix downstream is the one that would be fooled:
Postfix 3.7 by default also takes a bare LF as a line end, so ``<LF>.<LF>`` ends its DATA. If
mailmoat passed the client's bytes through, Postfix would deliver a second message, to bob,
from evil@x.test. mailmoat only ever ends data at ``<CR><LF>.<CR><LF>`` and re-serialises the
message, so Postfix must never see that second message, whatever ``smtp.bare_line_endings``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.raw_client import RawClient, Reply

pytestmark = pytest.mark.peers

FAKE_ENDS = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]

HEAD = b"From: s@sender.test\r\nTo: alice@example.test\r\nSubject: innocent\r\n\r\nHello Alice."
SMUGGLED = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<bob@example.test>\r\nDATA\r\nsmuggled\r\n"
REAL_END = b"\r\n.\r\n"


def _attack(port: int, fake_end: bytes) -> tuple[Reply | None, list[Reply]]:
    """Send one message with the smuggling payload; return (reply to the data, what followed)."""
    with RawClient(port) as c:
        c.expect(220)
        assert c.command(b"EHLO client.sender.test\r\n").code == 250
        assert c.command(b"MAIL FROM:<s@sender.test>\r\n").code == 250
        assert c.command(b"RCPT TO:<alice@example.test>\r\n").code == 250
        assert c.command(b"DATA\r\n").code == 354
        c.send(HEAD + fake_end + SMUGGLED + REAL_END)
        first = c.reply()
        rest: list[Reply] = []
        if not c.closed:
            try:
                c.send(b"QUIT\r\n")
                rest = c.replies_until_closed()
            except (BrokenPipeError, ConnectionResetError):
                pass
    return first, rest


def _gateway(tmp_path: Path, port: int, mode: str):
    return running_gateway(
        tmp_path / "md",
        **{"relay.downstream": f"127.0.0.1:{port}", "smtp.bare_line_endings": mode},
    )


def _assert_no_transaction(pf) -> None:
    """The downstream never saw a MAIL command (mailmoat's start-up connection that learns its
    EHLO extensions says EHLO and QUIT only)."""
    log = pf.log_text()
    assert "mail=" not in log and " client=localhost" not in log, log


def _assert_no_second_message(pf) -> None:
    assert pf.messages("bob") == []
    log = pf.log_text()
    assert "evil@x.test" not in log
    assert "bob@example.test" not in log


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_rejected(tmp_path: Path, postfix_downstream, fake_end: bytes) -> None:
    """bare_line_endings = "reject" (the default): the message is refused with 554 5.6.0 and
    the downstream is never even contacted."""
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port, "reject") as gw:
        first, rest = _attack(gw.port, fake_end)
    assert first is not None, "no reply to the end of data"
    assert first.code == 554 and first.text.startswith("5.6.0 "), first
    assert all(r.code != 250 for r in rest), rest
    _assert_no_second_message(pf)
    assert pf.messages("alice") == []
    _assert_no_transaction(pf)


@pytest.mark.parametrize("fake_end", FAKE_ENDS, ids=repr)
def test_smuggling_normalised(tmp_path: Path, postfix_downstream, fake_end: bytes) -> None:
    """bare_line_endings = "normalise": bare CR and LF become CRLF inside the one message; the
    smuggled commands arrive as text of that message, never as a second transaction. A NUL
    is refused in either mode."""
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port, "normalise") as gw:
        first, rest = _attack(gw.port, fake_end)
    assert first is not None, "no reply to the end of data"
    if b"\x00" in fake_end:
        assert first.code == 554 and first.text.startswith("5.6.0 "), first
        _assert_no_transaction(pf)
        assert pf.messages("alice") == []
    else:
        assert first.code == 250, first
        (msg,) = pf.wait_for_messages("alice")
        assert msg.envelope_sender == "s@sender.test"
        body = msg.content_crlf.partition(b"\r\n\r\n")[2]
        assert body.startswith(b"Hello Alice.\r\n")
        # the smuggled transaction is plain text of Alice's message, on CRLF lines
        assert SMUGGLED in body
        assert body.endswith(SMUGGLED + b"\r\n")
        assert b"\r" not in msg.raw
        # one transaction downstream, not two
        assert pf.log_text().count(" client=localhost[127.0.0.1]") == 1
    assert [r.code for r in rest] in ([221], [])
    _assert_no_second_message(pf)


def test_postfix_itself_would_be_fooled(postfix_downstream) -> None:
    """The control that gives the tests above their meaning: the same attack sent straight to
    the Postfix downstream does deliver a second message, to bob, from evil@x.test (Postfix
    3.7.11 here, smtpd_forbid_bare_newline = no by default). Skipped if a Postfix refuses it."""
    pf = postfix_downstream
    first, rest = _attack(pf.port, b"\n.\n")
    if first is None or first.code != 250 or 354 not in [r.code for r in rest]:
        pytest.skip(f"this Postfix does not take the bait: {first} {rest}")  # pragma: no cover
    (smuggled,) = pf.wait_for_messages("bob")
    assert smuggled.envelope_sender == "evil@x.test"
    assert b"smuggled" in smuggled.content


def test_smuggling_payload_does_not_hang_the_session(tmp_path: Path, postfix_downstream) -> None:
    """Closing after a rejected payload (reject mode) is clean: the client reads a 554 and an
    orderly end of stream, not a reset before the reply."""
    with _gateway(tmp_path, postfix_downstream.port, "reject") as gw:
        with RawClient(gw.port) as c:
            c.expect(220)
            c.command(b"EHLO client.sender.test\r\n")
            c.command(b"MAIL FROM:<s@sender.test>\r\n")
            c.command(b"RCPT TO:<alice@example.test>\r\n")
            c.command(b"DATA\r\n")
            c.send(HEAD + b"\n.\n" + SMUGGLED + REAL_END)
            assert c.expect(554).text.startswith("5.6.0 ")
            c.sock.settimeout(5)
            try:
                assert c.sock.recv(1024) == b""
            except ConnectionResetError:  # pragma: no cover
                pytest.fail("connection reset instead of closed")
            except TimeoutError:  # pragma: no cover
                pytest.fail("session not closed after the rejected payload")
