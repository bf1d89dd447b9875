"""Forged Authentication-Results fields (our authserv-id) are removed from every message,
whether or not the DNS checks run and whether or not mailmoat adds its own field (issue 10
item 5)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.support.dns_gateway import dns_gateway, message
from tests.support.fake_dns import ZoneNameserver
from tests.support.gateway import running_gateway
from tests.support.host import wait_until

FORGED = (
    b"Authentication-Results: mx.mailmoat.test;\r\n\tdkim=pass header.d=bank.test\r\n"
    b"authentication-results: (x) MX.MAILMOAT.TEST; spf=pass\r\n"
)
KEPT = b"Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.test\r\n"
MESSAGE = b"From: Bank <ceo@bank.test>\r\n" + FORGED + b"Subject: s\r\n" + KEPT + b"\r\nbody\r\n"


def _stored(md: Path) -> list[bytes]:
    new = md / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


@pytest.mark.parametrize("results_header", [True, False])
@pytest.mark.parametrize("spool_memory", [256 * 1024, 0])  # 0: the header scan reads a file
def test_forged_results_go_without_the_dns_checks(
    tmp_path: Path, results_header: bool, spool_memory: int
) -> None:
    md = tmp_path / "md"
    settings = {
        "dns.checks": False,
        "auth.results_header": results_header,
        "server.spool_memory": spool_memory,
    }
    with running_gateway(md, **settings) as gw, smtplib.SMTP("127.0.0.1", gw.port) as c:
        assert c.sendmail("s@sender.test", ["alice@example.test"], MESSAGE) == {}
    (stored,) = wait_until(lambda: _stored(md), 5, "the message in the Maildir")
    lf = MESSAGE.replace(b"\r\n", b"\n")
    assert stored.endswith(lf.replace(FORGED.replace(b"\r\n", b"\n"), b""))
    assert b"bank.test;" not in stored and b"MX.MAILMOAT.TEST" not in stored
    assert b"mx.mailmoat.test" not in stored.split(b"\n\n", 1)[0].split(b"(mailmoat)")[1]
    assert KEPT.replace(b"\r\n", b"\n") in stored


async def test_forged_results_go_with_the_dns_checks_but_without_our_field(
    fake_dns: ZoneNameserver,
) -> None:
    """dns.checks on, auth.results_header off: nothing of ours is added, the forged go."""
    async with dns_gateway(fake_dns, **{"auth.results_header": False}) as gw:
        out = await gw.send(msg=message(extra=FORGED.decode() + KEPT.decode()))
        assert out.code("message") == 250, out.replies
        [delivered] = gw.downstream.messages
    assert b"bank.test" not in delivered and b"MX.MAILMOAT.TEST" not in delivered
    assert b"Authentication-Results: mx.mailmoat.test" not in delivered
    assert KEPT in delivered
