"""A From field with no author domain that can be read is refused under DMARC like an author
domain that is no domain name (permerror, a failure under reject), never let through as
"none": no From at all, an encoded word, a full-width at sign, a group, a field the address
parser fails on (1,100 ":" raise RecursionError), and a field too long to parse, which is not
parsed at all (tens of KiB of "@" used to hold a worker's event loop for seconds). End to end
through a real gateway asking the in-process test zone, as test_dmarc_dns.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailmoat.headers import scan
from mailmoat.policy import dmarc
from mailmoat.policy.score import HEADERS_WANTED
from tests.support import dns_zone as zone
from tests.support.dns_gateway import captured_logs, dns_gateway, message
from tests.support.fake_dns import world

CLIENT_LOG_ONLY = {"fcrdns.action": "log", "helo.action": "log", "spf.action": "log"}
REFUSAL = b"550 5.7.1 Message rejected: its From field has no author domain that can be read"

UNREADABLE = [
    "=?utf-8?b?Y2VvQGJhbmsudGVzdA==?=",  # ceo@bank.test, encoded
    "ceo\uff20sender.test",  # a full-width at sign
    "CEO",
    "undisclosed-recipients:;",
    ":" * 900 + "\r\n " + ":" * 200,  # RecursionError in email.utils.getaddresses
    "a@sender.test, " + "\r\n x" * 2000,  # 6 KB: too long to parse
]


def _with_from(from_value: str | None) -> bytes:
    msg = message("a@nodmarc.test")
    new = b"" if from_value is None else f"From: {from_value}\r\n".encode()
    return msg.replace(b"From: Sender <a@nodmarc.test>\r\n", new, 1)


@pytest.mark.parametrize("from_value", [*UNREADABLE, None])
def test_no_readable_author_is_a_failure_under_reject(from_value: str | None) -> None:
    domains = dmarc.author_domains(scan([_with_from(from_value)], HEADERS_WANTED))
    result = dmarc._without_policy(domains)
    assert result is not None, domains
    assert (result.result, result.disposition) == ("permerror", "reject")
    assert result.reason == dmarc.UNREADABLE_AUTHOR
    assert dmarc._refusal(result).to_bytes().startswith(REFUSAL)


def test_an_unreadable_from_beside_a_readable_one_still_fails() -> None:
    head = b"From: a@nodmarc.test\r\nFrom: " + b"@" * 5000 + b"\r\nSubject: x\r\n\r\nbody\r\n"
    result = dmarc._without_policy(dmarc.author_domains(scan([head], HEADERS_WANTED)))
    assert result is not None and result.reason == dmarc.UNREADABLE_AUTHOR


def test_many_from_fields_are_not_all_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sixty distinct 4 KB From fields are parsed no more than one 4 KB field."""
    parsed: list[int] = []
    real = dmarc.getaddresses

    def spy(values: Any) -> Any:
        parsed.append(sum(len(v) for v in values))
        return real(values)

    monkeypatch.setattr(dmarc, "getaddresses", spy)
    fields = b"".join(
        b"From: " + b"\r\n ".join([b"%d@" % n + b"@" * 800] * 5) + b"\r\n" for n in range(60)
    )
    head = fields + b"Subject: x\r\n\r\nbody\r\n"
    result = dmarc._without_policy(dmarc.author_domains(scan([head], HEADERS_WANTED)))
    assert result is not None and result.reason == dmarc.UNREADABLE_AUTHOR
    assert sum(parsed) <= 4096, parsed


@pytest.mark.parametrize("from_value", [*UNREADABLE, None])
async def test_the_gateway_refuses_it(from_value: str | None) -> None:
    server = world()
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        with captured_logs() as logs:
            out = await gw.send(
                source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=_with_from(from_value)
            )
    assert out.replies.get("message", b"").startswith(REFUSAL), (out.replies, logs.of("check"))


async def test_a_huge_from_is_not_parsed_and_others_are_served(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    parsed: list[int] = []
    real = dmarc.getaddresses

    def spy(values: Any) -> Any:
        parsed.append(sum(len(v) for v in values))
        return real(values)

    monkeypatch.setattr(dmarc, "getaddresses", spy)
    field = b"From: " + b"\r\n ".join([b"@" * 900] * 68) + b"\r\n"  # 61 KB, folded
    huge = field * 4
    msg = message("a@nodmarc.test").replace(b"From: Sender <a@nodmarc.test>\r\n", huge, 1)
    server = world()
    async with dns_gateway(server, **CLIENT_LOG_ONLY, **{"smtp.max_header_size": 1 << 20}) as gw:
        bad, good = await asyncio.gather(
            gw.send(source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=msg),
            gw.send(
                source=zone.NOPTR_IP, sender="a@nodmarc.test", msg=_with_from("a@nodmarc.test")
            ),
        )
    assert bad.replies["message"].startswith(REFUSAL), bad.replies
    assert good.code("message") == 250, good.replies
    assert all(n <= 4096 for n in parsed), parsed  # the huge ones: never


async def test_an_internal_error_is_451_and_one_diagnosable_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a check raises: 451 for the client, and a log line naming the exception and
    where it was raised (it used to say only "session error")."""

    async def broken(self: object, client: object, msg: object) -> None:
        raise LookupError("no such thing")

    monkeypatch.setattr(dmarc.DmarcCheck, "message", broken)
    server = world()
    async with dns_gateway(server, **CLIENT_LOG_ONLY) as gw:
        with captured_logs() as logs:
            out = await gw.send(source=zone.NOPTR_IP, sender="a@nodmarc.test")
    assert out.replies["message"].startswith(b"451 4.3.0"), out.replies
    [line] = logs.of("session error")
    assert line["error"] == "LookupError" and line["detail"] == "no such thing"
    assert line["where"].startswith("policy/test_dmarc_unreadable.py:")
    assert line["via"].startswith("mailmoat/policy/")
    assert line["where"].endswith(" broken") and line["client"] == zone.NOPTR_IP
