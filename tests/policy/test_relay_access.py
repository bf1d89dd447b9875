"""Relay access (invariant 5, issue 10 item 3): which recipient domains are local, and the
sender-specified routing forms, through a real gateway and the real SMTP engine.

Each case is fixed so that a mutant of the check (a suffix or substring match, Unicode case
folding, a routing form let through) fails one of them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.raw_client import RawClient

LOCAL = ["example.test", "kelvin.test", "xn--bcher-kva.test"]


def _rcpt_replies(
    tmp_path: Path, rcpts: list[str], *, utf8: bool = False, **overrides
) -> list[tuple[int, str]]:
    over = {"domains.local": LOCAL, **overrides}
    with running_gateway(tmp_path / "md", **over) as gw, RawClient(gw.port) as c:
        c.expect(220)
        c.command(b"EHLO client.test\r\n")
        tail = b" SMTPUTF8" if utf8 else b""
        assert c.command(b"MAIL FROM:<s@sender.test>" + tail + b"\r\n").code == 250
        out = []
        for rcpt in rcpts:
            r = c.command(f"RCPT TO:{rcpt}\r\n".encode())
            out.append((r.code, r.text))
            if r.code == 250:
                assert c.command(b"RSET\r\n").code == 250
                assert c.command(b"MAIL FROM:<s@sender.test>" + tail + b"\r\n").code == 250
    return out


ROUTING = [
    "<victim%outside.test@example.test>",
    "<outside.test!victim@example.test>",
    '<"victim@outside.test"@example.test>',
    '<"victim\\@outside.test"@example.test>',
    '<"victim%outside.test"@example.test>',
    '<"outside.test!victim"@example.test>',
    "<@relay.test:victim%outside.test@example.test>",
    "<victim%outside.test@EXAMPLE.TEST>",
]


def test_routing_forms_refused_550_571_outside_relay_networks(tmp_path: Path) -> None:
    got = _rcpt_replies(tmp_path, ROUTING)
    for rcpt, (code, text) in zip(ROUTING, got, strict=True):
        assert code == 550 and text.startswith("5.7.1 "), (rcpt, code, text)


def test_routing_forms_pass_relay_access_for_relay_networks(tmp_path: Path) -> None:
    got = _rcpt_replies(tmp_path, ROUTING, **{"domains.relay_networks": ["127.0.0.1/32"]})
    assert all(code == 250 for code, _ in got), got


NOT_LOCAL = [
    "<alice@evilexample.test>",  # a suffix match would take it
    "<alice@sub.example.test>",
    "<alice@example.test.evil>",
    "<alice@example.testx>",
    "<alice@xample.test>",
    "<alice@[127.0.0.1]>",  # an address literal is never a local domain
    "<alice@[IPv6:::1]>",
    "<@example.test:victim@outside.test>",  # the source route is ignored, the final address counts
    "<@example.test,@kelvin.test:victim@outside.test>",
]


def test_only_exact_local_domains_are_local(tmp_path: Path) -> None:
    got = _rcpt_replies(tmp_path, NOT_LOCAL)
    for rcpt, (code, text) in zip(NOT_LOCAL, got, strict=True):
        assert (code, text) == (554, "5.7.1 Relay access denied"), rcpt


LOCAL_FORMS = [
    "<alice@example.test>",
    "<alice@EXAMPLE.TEST>",
    "<alice@Example.Test>",
    "<@outside.test,@relay.test:alice@example.test>",
    "<alice@XN--BCHER-KVA.TEST>",
    '<"alice"@example.test>',
    "<alice.o'neil+tag@example.test>",
]


def test_local_domains_in_any_ascii_case_and_behind_a_source_route(tmp_path: Path) -> None:
    got = _rcpt_replies(tmp_path, LOCAL_FORMS)
    assert [code for code, _ in got] == [250] * len(LOCAL_FORMS), got


def test_trailing_dot_is_a_syntax_error_not_a_local_domain(tmp_path: Path) -> None:
    ((code, text),) = _rcpt_replies(tmp_path, ["<alice@example.test.>"])
    assert code == 501 and text.startswith("5.1.3"), (code, text)


@pytest.mark.parametrize(
    "rcpt",
    [
        "<alice@\u212aelvin.test>",  # KELVIN SIGN: str.lower() makes it "kelvin.test"
        "<alice@KELV\u0130N.test>",  # LATIN CAPITAL I WITH DOT ABOVE
        "<alice@b\u00fccher.test>",  # the U-label of a local A-label is another name
        "<alice@B\u00dcCHER.test>",
    ],
)
def test_unicode_look_alikes_of_local_domains_are_not_local(tmp_path: Path, rcpt: str) -> None:
    ((code, text),) = _rcpt_replies(tmp_path, [rcpt], utf8=True)
    assert (code, text) == (554, "5.7.1 Relay access denied"), rcpt


def test_utf8_local_domain_listed_as_such_is_local(tmp_path: Path) -> None:
    got = _rcpt_replies(
        tmp_path,
        ["<j\u00f6rg@b\u00fccher.test>", "<alice@B\u00fccher.TEST>"],
        utf8=True,
        **{"domains.local": ["b\u00fccher.test"]},
    )
    assert [code for code, _ in got] == [250, 250], got


def test_source_routed_recipient_is_delivered_to_its_final_address(tmp_path: Path) -> None:
    maildir = tmp_path / "md"
    with running_gateway(maildir, **{"domains.local": LOCAL}) as gw, RawClient(gw.port) as c:
        c.expect(220)
        c.command(b"EHLO client.test\r\n")
        assert c.command(b"MAIL FROM:<s@sender.test>\r\n").code == 250
        assert c.command(b"RCPT TO:<@outside.test:alice@example.test>\r\n").code == 250
        assert c.command(b"DATA\r\n").code == 354
        assert c.command(b"Subject: x\r\n\r\nhi\r\n.\r\n").code == 250
    (delivered,) = (maildir / "new").iterdir()
    head = delivered.read_bytes().split(b"\n\n", 1)[0]  # a Maildir file has LF line ends
    assert b"\nDelivered-To: alice@example.test\n" in head
    assert b"outside.test" not in head
