"""The message checks see every field of the header block the internal server gets: a From
of a p=reject domain cannot hide behind fields the scan does not keep, nor after a line that
parsers read differently (the session refuses both before DMARC runs)."""

from __future__ import annotations

import pytest

from mailmoat.headers import MAX_KEPT
from tests.support.dns_gateway import dns_gateway
from tests.support.fake_dns import ZoneNameserver

REJECT = {"dmarc.action": "reject", "spf.action": "log", "dkim.action": "log"}
BANK_FROM = b"From: CEO <ceo@sender.test>\r\n"  # _dmarc.sender.test: p=reject
BODY = b"Subject: s\r\n\r\nbody\r\n"


async def test_the_control_dmarc_refuses_the_from_of_a_reject_domain(
    fake_dns: ZoneNameserver,
) -> None:
    async with dns_gateway(fake_dns, **REJECT) as gw:
        out = await gw.send(sender="a@none.test", msg=BANK_FROM + BODY)
    assert out.replies["message"].startswith(b"550 5.7.1 Message rejected: sender.test ")


@pytest.mark.parametrize(
    ("head", "answer"),
    [
        # more From fields than the scan keeps: DMARC judged only the first MAX_KEPT
        (b"From: a@none.test\r\n" * MAX_KEPT + BANK_FROM, b"554 5.6.0 Message rejected: more"),
        # after a line that continues mailmoat's own Received: field
        (b" x\r\n" + BANK_FROM, b"554 5.6.0 Message rejected: header line 1 "),
        # after a line Python's email reads past and Postfix does not
        (b"Subject: s\r\n:x\r\n" + BANK_FROM, b"554 5.6.0 Message rejected: header line 2 "),
    ],
)
async def test_a_from_the_checks_would_not_see_is_refused(
    fake_dns: ZoneNameserver, head: bytes, answer: bytes
) -> None:
    async with dns_gateway(fake_dns, **REJECT) as gw:
        out = await gw.send(sender="a@none.test", msg=head + BODY)
        assert gw.downstream.messages == []
    assert out.replies["message"].startswith(answer), out.replies


async def test_as_many_from_fields_as_are_kept_are_all_judged(fake_dns: ZoneNameserver) -> None:
    head = b"From: a@none.test\r\n" * (MAX_KEPT - 1) + BANK_FROM
    async with dns_gateway(fake_dns, **REJECT) as gw:
        out = await gw.send(sender="a@none.test", msg=head + BODY)
    assert out.replies["message"].startswith(b"550 5.7.1 Message rejected: sender.test ")
