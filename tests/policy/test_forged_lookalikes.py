"""Forged Authentication-Results fields that claim our authserv-id in a Unicode look-alike
(issue 10, the third red-team probe): mx.mailmoat.test with U+3002 (an IDNA dot) for a dot,
or with full-width letters. A consumer that normalises Unicode reads them as ours; they are removed
like the ASCII spelling, and an id that only resembles ours is kept."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from mailmoat.policy.auth import forged_id
from tests.support.gateway import running_gateway
from tests.support.host import wait_until

OURS = "mx.mailmoat.test"
LOOKALIKES = [
    "mx\u3002mailmoat.test",  # ideographic full stop
    "mx\uff0emailmoat\uff0etest",  # full-width full stop
    "mx\uff61mailmoat.test",  # half-width ideographic full stop
    "\uff4d\uff58.mailmoat.test",  # full-width letters
    "\uff2d\uff38.MAILMOAT.TEST",  # full-width capitals
    "mx.mailmoat.test\u3002",  # a final IDNA dot
    '"mx\u3002mailmoat.test"',  # quoted
]


@pytest.mark.parametrize("spelling", LOOKALIKES)
def test_lookalikes_of_our_id_are_ours(spelling: str) -> None:
    assert forged_id(f" {spelling}; dkim=pass header.d=bank.test", OURS)


@pytest.mark.parametrize("other", ["mx\u3002mailmoat.example", "mx-mailmoat.test", "mx.mailmoat"])
def test_other_ids_are_not(other: str) -> None:
    assert not forged_id(f" {other}; spf=pass", OURS)


def test_lookalike_fields_are_removed_from_the_delivered_message(tmp_path: Path) -> None:
    forged = "".join(
        f"Authentication-Results: {s}; dkim=pass header.d=forged.test\r\n" for s in LOOKALIKES
    )
    kept = "Authentication-Results: other.example; spf=pass\r\n"
    msg = f"From: <ceo@bank.test>\r\n{forged}{kept}Subject: s\r\n\r\nbody\r\n".encode()
    md = tmp_path / "md"
    with running_gateway(md, **{"dns.checks": False, "smtp.smtputf8": True}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            assert c.sendmail("s@sender.test", ["alice@example.test"], msg, ["SMTPUTF8"]) == {}
        new = md / "new"
        (stored,) = wait_until(lambda: list(new.iterdir()) if new.is_dir() else [], 5, "delivery")
    data = stored.read_bytes()
    assert b"forged.test" not in data, data
    assert kept.replace("\r\n", "\n").encode() in data
