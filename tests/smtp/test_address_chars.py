"""Non-printing code points in SMTPUTF8 addresses (issue 10 item 14).

The address goes into Return-Path, Delivered-To and Received: as it was sent. U+0085 (NEL),
U+2028/U+2029 (line and paragraph separators) end a line for some readers, bidi controls
disguise it, C1 controls and unassigned code points have no business there: the engine refuses
them at MAIL and RCPT with 553, and the header lines never see them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.smtp.events import RcptTo
from tests.smtp.test_connection import EHLO, U_FROM, session
from tests.support.gateway import running_gateway
from tests.support.raw_client import RawClient

BAD = {
    "C1 control U+0080": "\u0080",
    "NEL U+0085": "\u0085",
    "C1 control U+009F": "\u009f",
    "LINE SEPARATOR U+2028": "\u2028",
    "PARAGRAPH SEPARATOR U+2029": "\u2029",
    "LRM U+200E": "\u200e",
    "RLO U+202E": "\u202e",
    "LRI U+2066": "\u2066",
    "BOM U+FEFF": "\ufeff",
    "SOFT HYPHEN U+00AD": "\u00ad",
    "private use U+E000": "\ue000",
    "private use U+10FFFD": "\U0010fffd",
    "unassigned U+0378": "\u0378",
    "noncharacter U+FFFF": "\uffff",
    "NBSP U+00A0": "\u00a0",
    "IDEOGRAPHIC SPACE U+3000": "\u3000",
}
CASES = [pytest.param(ch, id=name) for name, ch in BAD.items()]


@pytest.mark.parametrize("ch", CASES)
@pytest.mark.parametrize(
    "path",
    ["<j{}rg@example.org>", '<"j{} rg"@example.org>', "<jorg@b{}cher.example>"],
    ids=["local", "quoted", "domain"],
)
def test_refused_at_mail(ch: str, path: str) -> None:
    run = session(EHLO + f"MAIL FROM:{path.format(ch)} SMTPUTF8\r\n".encode())
    assert run.codes == ["250", "553 5.1.7"]
    assert run.types == ["Helo", "Rejected:nonprinting"]


@pytest.mark.parametrize("ch", CASES)
@pytest.mark.parametrize(
    "path",
    ["<j{}rg@example.org>", '<"j{}rg"@example.org>', "<jorg@b{}cher.example>"],
    ids=["local", "quoted", "domain"],
)
def test_refused_at_rcpt(ch: str, path: str) -> None:
    run = session(EHLO + U_FROM + f"RCPT TO:{path.format(ch)}\r\n".encode())
    assert run.codes == ["250", "250 2.1.0", "553 5.1.3"]
    assert run.types == ["Helo", "MailFrom", "Rejected:nonprinting"]


def test_printable_unicode_addresses_still_accepted() -> None:
    run = session(
        EHLO
        + U_FROM
        + "RCPT TO:<\u0434\u0436\u043e@\u4f8b\u3048.\u30c6\u30b9\u30c8>\r\n".encode()
        + 'RCPT TO:<"j\u00f6 rg"@b\u00fccher.example>\r\n'.encode()
    )
    assert run.codes == ["250", "250 2.1.0", "250 2.1.5", "250 2.1.5"]


@pytest.mark.parametrize("ch", ["\u2028", "\u0085", "\u202e"])
def test_trace_headers_never_carry_them(tmp_path: Path, ch: str) -> None:
    """End to end: the refused sender and recipient leave nothing; the accepted ones, with
    their printable Unicode, are what the trace header lines show."""
    maildir = tmp_path / "md"
    with running_gateway(maildir) as gw, RawClient(gw.port) as c:
        c.expect(220)
        c.command(b"EHLO client.test\r\n")
        bad_from = f"MAIL FROM:<s{ch}x@sender.test> SMTPUTF8\r\n".encode()
        assert c.command(bad_from).code == 553
        assert c.command("MAIL FROM:<j\u00f6rg@sender.test> SMTPUTF8\r\n".encode()).code == 250
        assert c.command(f"RCPT TO:<al{ch}ice@example.test>\r\n".encode()).code == 553
        assert c.command("RCPT TO:<\u00e5lice@example.test>\r\n".encode()).code == 250
        assert c.command(b"DATA\r\n").code == 354
        assert c.command(b"Subject: x\r\n\r\nhi\r\n.\r\n").code == 250
    (delivered,) = (maildir / "new").iterdir()
    head = delivered.read_bytes().split(b"\n\n", 1)[0].decode()
    assert ch not in head
    assert "Return-Path: <j\u00f6rg@sender.test>\n" in head
    assert "Delivered-To: \u00e5lice@example.test\n" in head
    assert "for <\u00e5lice@example.test>" in head


def test_rcpt_domain_is_lower_cased_in_ascii_only() -> None:
    """str.lower() folds KELVIN SIGN onto "k": a policy reading RcptTo.domain must see the
    name that goes downstream, not a local domain it resembles."""
    run = session(
        EHLO + U_FROM + "RCPT TO:<a@\u212aELVIN.Test>\r\n".encode() + b"RCPT TO:<a@EXAMPLE.Org>\r\n"
    )
    assert [ev.domain for ev in run.of(RcptTo)] == ["\u212aelvin.test", "example.org"]
