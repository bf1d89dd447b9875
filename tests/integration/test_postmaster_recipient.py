"""`RCPT TO:<Postmaster>` (no domain: RFC 5321 4.5.1 makes every server accept it) reaches the
internal server as postmaster@ the first local domain (issue 10, the third red-team probe).
Passed on domainless, a Postfix inside appends its own $myorigin (mx.example.test here): a
name it does not serve, so the mail was refused, or relayed out where that name routes."""

from __future__ import annotations

import smtplib
from pathlib import Path

from mailmoat.server.transaction import addressed
from tests.support.gateway import running_gateway
from tests.support.postfix import PostfixInstance


def test_bare_postmaster_is_delivered_to_postmaster_at_the_first_local_domain(
    tmp_path: Path, postfix_instance
) -> None:
    pf: PostfixInstance = postfix_instance.downstream(users=("alice", "postmaster"))
    settings = {
        "relay.downstream": f"127.0.0.1:{pf.port}",
        "domains.local": ["example.test", "other.test"],
    }
    msg = b"From: <s@sender.test>\r\nSubject: abuse report\r\n\r\nHello postmaster.\r\n"
    with running_gateway(tmp_path / "md", **settings) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            assert c.sendmail("s@sender.test", ["Postmaster", "alice@example.test"], msg) == {}
    (only,) = pf.wait_for_messages("postmaster")
    assert only.envelope_recipient == "postmaster@example.test"
    assert only.content_crlf.endswith(msg)


def test_addressed_names_postmaster_once() -> None:
    local = ["example.test", "other.test"]
    assert addressed(["Postmaster", "a@other.test"], local) == [
        "postmaster@example.test",
        "a@other.test",
    ]
    assert addressed(["postmaster@example.test", "POSTMASTER"], local) == [
        "postmaster@example.test"
    ]
    assert addressed(["a@example.test"], local) == ["a@example.test"]
