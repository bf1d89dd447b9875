"""DMARC end to end: a real gateway, its policy records served by a real dnsmasq, the verdict
at the end of DATA. The table-driven corpus (test_dmarc_corpus.py) covers the RFC case by case;
these show that what the corpus decides reaches the SMTP reply, through real DNS (TXT records
split into strings, non-ASCII bytes on the wire, a lookup the server refuses)."""

from __future__ import annotations

import pytest

from mailmoat.policy.dmarc import MAX_AUTHOR_DOMAINS
from tests.support import dns_zone as zone
from tests.support.dns_gateway import captured_logs, dns_gateway, message
from tests.support.fake_dns import ZoneNameserver

# the client checks only log; DMARC runs with its defaults (p=reject refused with 550)
CLIENT_LOG_ONLY = {"fcrdns.action": "log", "helo.action": "log", "spf.action": "log"}

RECORDS = [
    'txt-record=_dmarc.parent.test,"v=DMARC1; p=reject"',
    # an invalid record at a subdomain: no policy there (6.6.3 step 6.2), not the parent's
    'txt-record=_dmarc.broken.parent.test,"v=DMARC1; p=rejectt"',
    # v=DMARC10 is no DMARC record: the real one beside it stands (6.6.3 step 2)
    'txt-record=_dmarc.ten.test,"v=DMARC10; p=none"',
    'txt-record=_dmarc.ten.test,"v=DMARC1; p=reject"',
    # one record in two strings, joined
    'txt-record=_dmarc.split.test,"v=DMARC1; p=","reject"',
    # a non-ASCII byte in rua: only that tag is ignored
    'txt-record=_dmarc.utf8.test,"v=DMARC1; p=reject; rua=mailto:d@b\u00fccher.test"',
    # pct=-1 is invalid: the default 100, not 0
    'txt-record=_dmarc.pct.test,"v=DMARC1; p=reject; pct=-1"',
    # an invalid sp with no rua: no policy at all, p is not applied (6.6.3 step 6.2)
    'txt-record=_dmarc.badsp.test,"v=DMARC1; p=reject; sp=bogus"',
]


def authored(from_value: str) -> bytes:
    """A message from a@nodmarc.test's envelope whose From field is `from_value`."""
    msg = message("a@nodmarc.test")
    return msg.replace(b"From: Sender <a@nodmarc.test>", f"From: {from_value}".encode(), 1)


@pytest.mark.parametrize(
    ("author", "code"),
    [
        ("a@broken.parent.test", 250),
        ("a@ten.test", 550),
        ("a@split.test", 550),
        ("a@utf8.test", 550),
        ("a@pct.test", 550),
        ("a@badsp.test", 250),
        # a From the address parser makes nothing of still names sender.test (p=reject)
        ("x@nodmarc.test <a@sender.test>", 550),
    ],
)
async def test_records_decide_the_reply(author: str, code: int) -> None:
    server = ZoneNameserver.from_dnsmasq(zone.records() + RECORDS)
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        with captured_logs() as logs:
            out = await gw.send(source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=authored(author))
    assert out.code("message") == code, (out.replies, logs.of("check"))


async def test_many_authors_cannot_hide_a_reject_one() -> None:
    """Issue 10 item 4: five throw-away authors used to make DMARC "none"."""
    server = ZoneNameserver.from_dnsmasq(zone.records() + RECORDS)
    throwaway = ", ".join(f"x{i}@throwaway{i}.test" for i in range(5))
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        out = await gw.send(
            source=zone.NOPTR_IP,
            sender="a@nodmarc.test",
            msg=authored(f"{throwaway}, a@sender.test"),
        )
    assert out.replies["message"].startswith(b"550 5.7.1 Message rejected: sender.test")


async def test_more_authors_than_evaluated_is_refused() -> None:
    """Past the bound, the domains not evaluated count as the strictest outcome, never none
    (none of these domains publishes a policy)."""
    server = ZoneNameserver.from_dnsmasq(zone.records() + RECORDS)
    many = ", ".join(f"x{i}@throwaway{i}.test" for i in range(MAX_AUTHOR_DOMAINS + 1))
    few = ", ".join(f"x{i}@throwaway{i}.test" for i in range(MAX_AUTHOR_DOMAINS))
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        refused = await gw.send(source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=authored(many))
        accepted = await gw.send(source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=authored(few))
    assert refused.replies["message"].startswith(b"550 5.7.1"), refused.replies
    assert b"too many" in refused.replies["message"]
    assert accepted.code("message") == 250, accepted.replies


async def test_a_temporary_error_that_cannot_align_does_not_defer() -> None:
    """SPF for example.org is a temporary error (the test server refuses the zone); it could
    never align with sender.test, so the message fails p=reject for certain: 550, not 451."""
    server = ZoneNameserver.from_dnsmasq(zone.records() + RECORDS)
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        with captured_logs() as logs:
            out = await gw.send(
                source=zone.NOPTR_IP, sender="a@example.org", msg=authored("a@sender.test")
            )
    spf = [f for f in logs.of("check") if f.get("check") == "spf"]
    assert [f["result"] for f in spf] == ["temperror"]
    assert out.replies["message"].startswith(b"550 5.7.1"), out.replies
