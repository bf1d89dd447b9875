"""Sender checks, alone and through a real gateway: SPF (MAIL FROM and HELO), DKIM (a signed
message still verifies byte for byte after relaying; a tampered one fails), DMARC (alignment,
p/sp, organizational domain, pct), the Authentication-Results header and the removal of forged
ones. The DNS answers come from the test zone in process (`fake_dns`); a few tests ask the
private dnsmasq (`dns_server`, `silent_dns`) to show the checks work over the network end to
end."""

from __future__ import annotations

import asyncio
import random

import pytest
import spf

from mailmoat.dns import Resolver, Status
from mailmoat.headers import scan
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy.auth import _render, authserv_id, results_header
from mailmoat.policy.base import Client
from mailmoat.policy.dkim import DkimCheck, unsigned
from mailmoat.policy.dkim import _prepare as dkim_prepare
from mailmoat.policy.dmarc import aligned, evaluate, judge, organizational_domain, parse_record
from mailmoat.policy.fcrdns import FcrdnsCheck
from mailmoat.policy.results import DKIM, DkimResult, SpfResult, SpfResults
from mailmoat.policy.score import HEADERS_WANTED, SessionState
from mailmoat.policy.spf import SpfEvaluator
from tests.support import dns_zone as zone
from tests.support.dns_gateway import (
    DnsGateway,
    captured_logs,
    dns_gateway,
    message,
    sign,
    verify_with_zone,
)
from tests.support.dnsmasq import Dnsmasq, SilentServer
from tests.support.fake_dns import ZoneNameserver, world
from tests.support.fake_dns import resolver as fake_resolver

LOG_ONLY = {
    "fcrdns.action": "log",
    "helo.action": "log",
    "spf.action": "log",
    "dkim.action": "log",
    "dmarc.action": "log",
    "dmarc.quarantine_action": "log",
}


CLIENT_LOG_ONLY = {"fcrdns.action": "log", "helo.action": "log", "spf.action": "log"}


def only(**overrides: object) -> dict[str, object]:
    return {**LOG_ONLY, **overrides}


def resolver(nameserver: ZoneNameserver, timeout: float = 1.0) -> Resolver:
    return fake_resolver(nameserver, timeout=timeout)


def header_of(delivered: bytes) -> str:
    head = delivered.split(b"\r\n\r\n", 1)[0].decode()
    start = head.index("Authentication-Results:")
    end = head.index("\r\nReceived:", start)
    return head[start:end]


# --- SPF ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ip", "sender", "result"),
    [
        (zone.GOOD_IP, "a@sender.test", "pass"),  # mx
        ("127.0.0.9", "a@sender.test", "pass"),  # include:_spf.sender.test
        (zone.NOPTR_IP, "a@sender.test", "fail"),
        (zone.NOPTR_IP, "a@soft.test", "softfail"),
        (zone.NOPTR_IP, "a@none.test", "none"),
        (zone.NOPTR_IP, "a@permerror.test", "permerror"),
        (zone.NOPTR_IP, "a@example.org", "temperror"),  # REFUSED by the test server
        (zone.GOOD_IP, '"odd@local"@strict.test', "pass"),
    ],
)
async def test_spf_results(fake_dns: ZoneNameserver, ip: str, sender: str, result: str) -> None:
    evaluator = SpfEvaluator(resolver(fake_dns))
    got = await evaluator.check(ip, sender, "client.sender.test")
    assert (got.identity, got.result) == ("mailfrom", result)


async def test_spf_helo_identity(fake_dns: ZoneNameserver) -> None:
    evaluator = SpfEvaluator(resolver(fake_dns))
    good = await evaluator.check(zone.GOOD_IP, "", zone.GOOD_HELO)  # "v=spf1 a -all"
    bad = await evaluator.check(zone.NOPTR_IP, "", zone.GOOD_HELO)
    literal = await evaluator.check(zone.GOOD_IP, "", "[127.0.0.2]")
    assert (good.identity, good.result, bad.result, literal.result) == (
        "helo",
        "pass",
        "fail",
        "none",
    )


async def test_spf_timeout_is_temperror(fake_dns: ZoneNameserver) -> None:
    fake_dns.silent = True
    got = await SpfEvaluator(resolver(fake_dns, 0.3)).check(zone.GOOD_IP, "a@sender.test", "x.test")
    assert got.result == "temperror"


async def test_spf_overall_deadline(fake_dns: ZoneNameserver) -> None:
    fake_dns.silent = True
    got = await SpfEvaluator(resolver(fake_dns, 5), timeout=0.3).check(
        zone.GOOD_IP, "a@sender.test", "x.test"
    )
    assert got.result == "temperror" and "too long" in got.explanation


def test_pyspf_cannot_reach_the_network_by_itself() -> None:
    """Outside our evaluation pyspf's DNS function refuses: no blocking lookup, ever."""
    assert spf.query(i="127.0.0.2", s="a@sender.test", h="x.test").check()[0] == "temperror"


async def test_spf_lookups_go_through_the_cache(fake_dns: ZoneNameserver) -> None:
    r = resolver(fake_dns)
    evaluator = SpfEvaluator(r)
    await evaluator.check("127.0.0.9", "a@sender.test", "x.test")
    sent = r.stats.queries
    assert sent >= 4  # TXT, MX, A of the MX, TXT of the include
    await evaluator.check("127.0.0.9", "b@sender.test", "x.test")
    assert r.stats.queries == sent


def clocked(nameserver: ZoneNameserver, now: list[float]) -> Resolver:
    return fake_resolver(nameserver, clock=lambda: now[0])


async def test_spf_result_is_reused_within_the_ttl_and_evaluated_again_after() -> None:
    server = world(ttl=60)
    now = [1000.0]
    evaluator = SpfEvaluator(clocked(server, now))
    first = await evaluator.check("127.0.0.9", "a@sender.test", "x.test")
    runs, asked = evaluator.evaluations, server.asked("sender.test")
    # no macro in sender.test's records: another local part and HELO get the same result
    again = evaluator.check_now("127.0.0.9", "b@sender.test", "y.test")
    assert again is not None and (first.result, again.result) == ("pass", "pass")
    assert evaluator.evaluations == runs and len(evaluator) == 1
    assert evaluator.check_now("127.0.0.4", "a@sender.test", "x.test") is not None  # cached DNS
    assert evaluator.evaluations == runs + 1
    now[0] += 61  # past the TTL of the answers: evaluated again, and asked again
    assert evaluator.check_now("127.0.0.9", "a@sender.test", "x.test") is None
    assert (await evaluator.check("127.0.0.9", "a@sender.test", "x.test")).result == "pass"
    assert evaluator.evaluations > runs + 1 and server.asked("sender.test") > asked


async def test_spf_temporary_errors_are_never_cached(fake_dns: ZoneNameserver) -> None:
    server = fake_dns
    evaluator = SpfEvaluator(resolver(server))
    refused = await evaluator.check(zone.NOPTR_IP, "a@example.org", "x.test")
    assert refused.result == "temperror" and len(evaluator) == 0
    server.down = True
    down = await evaluator.check(zone.GOOD_IP, "a@sender.test", "x.test")
    assert down.result == "temperror" and len(evaluator) == 0
    server.down = False
    assert (await evaluator.check(zone.GOOD_IP, "a@sender.test", "x.test")).result == "pass"
    assert len(evaluator) == 1


async def test_spf_record_with_macros_is_cached_per_identity() -> None:
    server = ZoneNameserver.from_dnsmasq(
        [
            'txt-record=macro.test,"v=spf1 exists:%{l}.ok.macro.test -all"',
            "host-record=good.ok.macro.test,127.0.0.2",
        ]
    )
    evaluator = SpfEvaluator(resolver(server))
    assert (await evaluator.check(zone.GOOD_IP, "good@macro.test", "x.test")).result == "pass"
    assert (await evaluator.check(zone.GOOD_IP, "bad@macro.test", "x.test")).result == "fail"
    assert (await evaluator.check(zone.GOOD_IP, "good@macro.test", "x.test")).result == "pass"
    assert len(evaluator) == 2


@pytest.mark.parametrize(
    ("source", "sender", "code"),
    [
        (zone.GOOD_IP, "a@sender.test", 250),
        (zone.NOPTR_IP, "a@sender.test", 550),
        (zone.NOPTR_IP, "a@soft.test", 250),  # softfail is never refused by itself
        (zone.NOPTR_IP, "a@permerror.test", 250),
        (zone.NOPTR_IP, "a@example.org", 451),
        (zone.NOPTR_IP, "", 550),  # null sender: the HELO identity decides
    ],
)
async def test_spf_reject(fake_dns: ZoneNameserver, source: str, sender: str, code: int) -> None:
    async with dns_gateway(fake_dns, **only(**{"spf.action": "reject"})) as gw:
        out = await gw.send(source=source, sender=sender, msg=message())
        assert out.code("rcpt") == code, out.replies
        if code == 550:
            assert b"5.7.23" in out.replies["rcpt"]


async def test_spf_scores(fake_dns: ZoneNameserver) -> None:
    settings = only(**{"spf.action": "score", "score.threshold": 3})
    async with dns_gateway(fake_dns, **settings) as gw:
        assert (await gw.send(source=zone.NOPTR_IP, sender="a@soft.test")).code("rcpt") == 250
        out = await gw.send(source=zone.NOPTR_IP, sender="a@sender.test")
        assert out.replies["rcpt"].startswith(b"550 5.7.1 Message refused")


# --- DKIM --------------------------------------------------------------------------------------


async def test_signed_message_verifies_byte_for_byte_after_relaying(dns_server: Dnsmasq) -> None:
    signed = sign(message())
    async with dns_gateway(dns_server.address, **only()) as gw:
        out = await gw.send(msg=signed)
        assert out.code("message") == 250
        [delivered] = gw.downstream.messages
    ours, _, theirs = delivered.partition(b"\r\nReceived: ")
    assert delivered.endswith(signed)
    trace = delivered[: len(delivered) - len(signed)]
    assert trace.startswith(b"Authentication-Results: mx.mailmoat.test;")
    assert trace.count(b"\r\nReceived: from ") == 1 and ours and theirs
    assert verify_with_zone(delivered)
    ar = header_of(delivered)
    assert "dkim=pass header.d=sender.test header.s=sel header.b=" in ar
    assert "dmarc=pass (p=reject dis=none) header.from=sender.test" in ar
    assert "spf=pass smtp.mailfrom=sender.test" in ar


async def test_tampered_message_fails(fake_dns: ZoneNameserver) -> None:
    tampered = sign(message()).replace(b"Hello.", b"Hello!")
    async with dns_gateway(fake_dns, **only()) as gw:
        assert (await gw.send(msg=tampered)).code("message") == 250
        [delivered] = gw.downstream.messages
    assert not verify_with_zone(delivered)
    assert "dkim=fail header.d=sender.test" in header_of(delivered)
    async with dns_gateway(fake_dns, **only(**{"dkim.action": "reject"})) as gw:
        out = await gw.send(msg=tampered)
        assert out.replies["message"].startswith(b"550 5.7.20")
        assert gw.downstream.messages == []


async def test_dkim_key_missing_and_key_lookup_timeout(fake_dns: ZoneNameserver) -> None:
    nokey = sign(message(), selector="nokey")
    async with dns_gateway(fake_dns, **only()) as gw:
        await gw.send(msg=nokey)
        assert "dkim=permerror header.d=sender.test header.s=nokey" in header_of(
            gw.downstream.messages[0]
        )
    fake_dns.silent = True
    async with dns_gateway(fake_dns, **only(**{"dkim.action": "reject", "dns.timeout": 0.3})) as gw:
        out = await gw.send(msg=sign(message()))
        assert out.replies["message"].startswith(b"451 4.4.3")


async def test_unsigned_message_is_dkim_none(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only(**{"dkim.action": "reject"})) as gw:
        assert (await gw.send()).code("message") == 250
        assert "dkim=none" in header_of(gw.downstream.messages[0])


def dkim_check(gw: DnsGateway) -> DkimCheck:
    [check] = [c for c in gw.gateway.pipeline.checks if isinstance(c, DkimCheck)]
    return check


async def test_unsigned_message_takes_no_dkim_work_and_a_signed_one_still_verifies(
    fake_dns: ZoneNameserver,
) -> None:
    async with dns_gateway(fake_dns, **only()) as gw:
        assert (await gw.send()).code("message") == 250
        assert dkim_check(gw).verifier._pool is None  # no copy, no thread for it
        assert "dkim=none" in header_of(gw.downstream.messages[0])
        assert (await gw.send(msg=sign(message()))).code("message") == 250
        assert dkim_check(gw).verifier._pool is not None
        assert "dkim=pass header.d=sender.test" in header_of(gw.downstream.messages[1])


@pytest.mark.parametrize(
    ("head", "shortcut"),
    [
        (b"From: a@sender.test\r\nSubject: x\r\n", True),
        (b"From: a@sender.test\r\n\tcontinued\r\nSubject: dkim-signature\r\n", True),
        (b"X-Odd : value\r\nSubject: about dkim-signature\r\n", False),  # dkimpy cannot parse it
        (b"From x Mon Jan 1\r\nDKIM-Signature: v=1; d=x\r\n", False),  # dkimpy skips From_
        (b"garbage line\r\nDKIM-Signature: v=1; d=x\r\n", False),
        (b" leading continuation\r\nSubject: dkim-signature\r\n", False),
        (b"DKIM-Signature : v=1; d=x\r\n", False),
        (b"dkim-signature: v=1; d=x\r\n", False),
    ],
)
def test_the_unsigned_shortcut_agrees_with_dkimpy(head: bytes, shortcut: bool) -> None:
    """Whenever the header scan says "unsigned", dkimpy finds no signature to verify."""
    spool = Spool()
    spool.write(head + b"\r\nbody\r\n")
    msg = Message(Envelope("a@sender.test", ["alice@example.test"]), spool, "Q1")
    assert unsigned(scan(spool.chunks(), HEADERS_WANTED)) is shortcut
    if shortcut:
        assert dkim_prepare(msg, 5)[1] == []


# --- DMARC -------------------------------------------------------------------------------------


def test_dmarc_records_and_alignment() -> None:
    r = parse_record(b"v=DMARC1; p=reject; sp=none; adkim=s; pct=50; rua=mailto:x@y")
    assert r is not None and (r.p, r.sp, r.adkim, r.aspf, r.pct) == ("reject", "none", "s", "r", 50)
    assert parse_record(b"v=DMARC1; p=bogus") is None
    bogus = parse_record(b"v=DMARC1; p=bogus; rua=mailto:a@b.test")
    assert bogus is not None and bogus.p == "none"
    assert parse_record(b"v=spf1 -all") is None
    assert parse_record(b"p=reject; v=DMARC1") is None  # v must come first
    assert organizational_domain("a.b.sender.test") == "sender.test"
    assert organizational_domain("x.foo.co.uk") == "foo.co.uk"
    assert aligned("mail.sender.test", "sender.test", strict=False)
    assert not aligned("mail.sender.test", "sender.test", strict=True)
    assert not aligned("a.co.uk", "b.co.uk", strict=False)


def spf_result(result: str, domain: str) -> SpfResults:
    return SpfResults(SpfResult("mailfrom", domain, result), None)


def test_dmarc_results_are_remembered_unless_sampled() -> None:
    reject = parse_record(b"v=DMARC1; p=reject")
    sampled = parse_record(b"v=DMARC1; p=reject; pct=50")
    spf = spf_result("fail", "other.test")
    first = judge("sender.test", (Status.OK, reject, False), spf, [])
    assert first.result == "fail" and first.disposition == "reject"
    assert judge("sender.test", (Status.OK, reject, False), spf, []) is first
    dispositions = {
        judge("sender.test", (Status.OK, sampled, False), spf, [], random.Random(seed)).disposition
        for seed in range(20)
    }
    assert dispositions == {"reject", "quarantine"}  # sampled each time, never remembered


async def test_dmarc_evaluation(fake_dns: ZoneNameserver) -> None:
    r = resolver(fake_dns)
    fail, none = spf_result("fail", "sender.test"), []
    got = await evaluate(r, "sender.test", fail, none)
    assert (got.result, got.policy, got.disposition) == ("fail", "reject", "reject")
    dkim_ok = [DkimResult("pass", "sender.test", "sel")]
    assert (await evaluate(r, "sender.test", fail, dkim_ok)).result == "pass"
    other = [DkimResult("pass", "other.test", "sel")]
    assert (await evaluate(r, "sender.test", fail, other)).result == "fail"
    # a subdomain without a record of its own: the organizational domain's sp
    sub = await evaluate(r, "sub.sender.test", fail, none)
    assert (sub.result, sub.policy) == ("fail", "quarantine")
    # relaxed SPF alignment: MAIL FROM at a subdomain aligns with the From domain
    relaxed = await evaluate(r, "sender.test", spf_result("pass", "bounce.sender.test"), none)
    assert relaxed.result == "pass"
    # strict.test wants strict alignment
    strict = await evaluate(r, "strict.test", spf_result("pass", "mail.strict.test"), none)
    assert strict.result == "fail"
    assert (await evaluate(r, "nodmarc.test", fail, none)).result == "none"
    # SPF could not be checked: not a pass, not a fail either
    temp = await evaluate(r, "sender.test", spf_result("temperror", "sender.test"), none)
    assert (temp.result, temp.policy) == ("temperror", "reject")


async def test_dmarc_pct_samples_the_policy() -> None:
    server = ZoneNameserver.from_dnsmasq(
        ['txt-record=_dmarc.half.test,"v=DMARC1; p=reject; pct=50"']
    )
    r, fail = resolver(server), spf_result("fail", "half.test")
    rng = random.Random(1)
    dispositions = [(await evaluate(r, "half.test", fail, [], rng)).disposition for _ in range(200)]
    assert set(dispositions) == {"reject", "quarantine"}
    assert 60 < dispositions.count("reject") < 140


@pytest.mark.parametrize(
    ("source", "sender", "author", "signer", "code"),
    [
        (zone.GOOD_IP, "a@sender.test", "a@sender.test", None, 250),  # SPF aligned
        (zone.NOPTR_IP, "a@sender.test", "a@sender.test", None, 550),  # p=reject
        (zone.NOPTR_IP, "a@sender.test", "a@sender.test", "sender.test", 250),  # DKIM aligned
        (zone.NOPTR_IP, "a@sender.test", "a@sender.test", "other.test", 550),  # not aligned
        (zone.NOPTR_IP, "a@nodmarc.test", "a@sender.test", None, 550),  # From decides
        (zone.NOPTR_IP, "a@soft.test", "a@soft.test", None, 250),  # quarantine: scored
        (zone.NOPTR_IP, "a@none.test", "a@none.test", None, 250),  # p=none
        (zone.NOPTR_IP, "a@nodmarc.test", "a@nodmarc.test", None, 250),  # no policy
    ],
)
async def test_dmarc_defaults(
    fake_dns: ZoneNameserver, source: str, sender: str, author: str, signer: str | None, code: int
) -> None:
    msg = message(author)
    if signer is not None:
        msg = sign(msg, domain=signer)
    with captured_logs() as logs:
        async with dns_gateway(fake_dns, **CLIENT_LOG_ONLY) as gw:  # DMARC defaults
            out = await gw.send(source=source, helo="client.sender.test", sender=sender, msg=msg)
    assert out.code("message") == code, (out.replies, logs.of("check"), logs.of("score"))
    if code == 550:
        assert b"5.7.1 Message rejected" in out.replies["message"]


@pytest.mark.parametrize(
    ("source", "helo", "sender", "author", "signer"),
    [
        (zone.GOOD_IP, zone.GOOD_HELO, "a@sender.test", "a@sender.test", None),
        (zone.NOPTR_IP, "localhost", "a@sender.test", "a@sender.test", None),
        (zone.LIAR_IP, "ghost.sender.test", "a@sender.test", "a@sender.test", "sender.test"),
        (zone.MISMATCH_IP, "[127.0.0.1]", "a@nodmarc.test", "a@sender.test", "other.test"),
        (zone.NOPTR_IP, zone.GOOD_HELO, "a@soft.test", "a@soft.test", None),
        (zone.GOOD_IP, zone.GOOD_HELO, "", "a@none.test", None),
    ],
)
async def test_cached_answers_give_the_same_verdicts_without_asking(
    fake_dns: ZoneNameserver, source: str, helo: str, sender: str, author: str, signer: str | None
) -> None:
    """The second identical transaction is decided from cached answers (no query but those
    that failed: the synchronous paths) and gets exactly what the first got."""
    msg = message(author) if signer is None else sign(message(author), domain=signer)
    async with dns_gateway(fake_dns, **CLIENT_LOG_ONLY) as gw:
        [fcrdns] = [c for c in gw.gateway.pipeline.checks if isinstance(c, FcrdnsCheck)]
        with captured_logs() as logs:
            first = await gw.send(source=source, helo=helo, sender=sender, msg=msg)
        stats = fcrdns.resolver.stats
        answered = stats.queries - stats.temperrors
        # the second from cached answers, the third from the results kept from those
        for _ in range(2):
            with captured_logs() as again:
                second = await gw.send(source=source, helo=helo, sender=sender, msg=msg)
            assert stats.queries - stats.temperrors == answered  # only failures asked again
            assert {k: v.split(b" queued as ")[0] for k, v in first.replies.items()} == {
                k: v.split(b" queued as ")[0] for k, v in second.replies.items()
            }
            assert [f["results"] for f in logs.of("checks")] == [
                f["results"] for f in again.of("checks")
            ]
            assert logs.of("check") == again.of("check")
        delivered = [header_of(m) for m in gw.downstream.messages]
    assert len(delivered) in (0, 3) and len(set(delivered)) <= 1


async def test_two_from_fields_cannot_hide_a_spoofed_one(fake_dns: ZoneNameserver) -> None:
    msg = message("a@sender.test", extra="From: b@none.test\r\n")
    async with dns_gateway(fake_dns, **CLIENT_LOG_ONLY) as gw:
        out = await gw.send(source=zone.NOPTR_IP, sender="a@none.test", msg=msg)
        assert out.replies["message"].startswith(b"550 5.7.1")


async def test_dmarc_policy_lookup_timeout_defers(silent_dns: SilentServer) -> None:
    async with dns_gateway(
        silent_dns.address, **only(**{"dmarc.action": "reject", "dns.timeout": 0.3})
    ) as gw:
        out = await gw.send()
        assert out.replies["message"].startswith(b"451 4.4.3")


# --- Authentication-Results --------------------------------------------------------------------


def test_results_headers_are_remembered_for_short_keys_only() -> None:
    st = SessionState(Client("192.0.2.1", 25000))
    msg = Message(Envelope("a@sender.test"), Spool(), "Q1")
    st.set(DKIM, [DkimResult("pass", "sender.test", "sel", "AbCdEfGh")])
    first = results_header("mx.test", st, msg)
    assert first == (
        b"Authentication-Results: mx.test;\r\n"
        b"\tdkim=pass header.d=sender.test header.s=sel header.b=AbCdEfGh\r\n"
    )
    assert results_header("mx.test", st, msg) is first  # remembered
    size = _render.cache_info().currsize
    st.set(DKIM, [DkimResult("pass", "d" * 600 + ".test", "sel", "AbCdEfGh")])
    long = results_header("mx.test", st, msg)
    assert long.startswith(b"Authentication-Results: mx.test;\r\n\tdkim=pass header.d=ddd")
    assert _render.cache_info().currsize == size  # not kept: the message chose its length


def test_authserv_id_parsing() -> None:
    assert authserv_id(" mx.mailmoat.test; spf=pass") == "mx.mailmoat.test"
    assert authserv_id("(comment (nested)) MX.Mailmoat.Test 1; none") == "mx.mailmoat.test"
    assert authserv_id('"mx.mailmoat.test"; none') == "mx.mailmoat.test"
    assert authserv_id("other.example;\r\n\tspf=pass") == "other.example"


async def test_forged_results_are_removed_and_the_rest_kept_byte_for_byte(
    fake_dns: ZoneNameserver,
) -> None:
    forged = (
        "Authentication-Results: mx.mailmoat.test;\r\n\tdkim=pass header.d=bank.test\r\n"
        "authentication-results: (x) MX.MAILMOAT.TEST; spf=pass\r\n"
    )
    kept = "Authentication-Results: other.example; spf=pass smtp.mailfrom=sender.test\r\n"
    msg = sign(message(extra=forged + kept))
    async with dns_gateway(fake_dns, **only()) as gw:
        out = await gw.send(msg=msg)
        assert out.code("message") == 250
        [delivered] = gw.downstream.messages
    assert forged.encode() not in delivered
    assert b"bank.test" not in delivered and b"MX.MAILMOAT.TEST" not in delivered
    assert delivered.endswith(msg.replace(forged.encode(), b""))
    assert kept.encode() in delivered
    assert delivered.count(b"Authentication-Results: mx.mailmoat.test;") == 1
    assert verify_with_zone(delivered)


async def test_custom_authserv_id(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only(**{"auth.authserv_id": "filter.example.test"})) as gw:
        msg = message(extra="Authentication-Results: filter.example.test; none\r\n")
        await gw.send(msg=msg)
        delivered = gw.downstream.messages[0]
    assert delivered.startswith(b"Authentication-Results: filter.example.test;\r\n\t")
    assert delivered.count(b"filter.example.test") == 1


async def test_every_decision_is_logged_with_its_reasons(fake_dns: ZoneNameserver) -> None:
    with captured_logs() as logs:
        async with dns_gateway(fake_dns) as gw:
            await gw.send(source=zone.NOPTR_IP, helo="localhost")
            await asyncio.sleep(0)
    checks = {f["check"]: f for f in logs.of("check")}
    assert checks["fcrdns"]["reason"] == "no PTR record" and checks["fcrdns"]["points"] == 2
    assert checks["helo"]["result"] == "fail invalid" and checks["helo"]["points"] == 1
    assert checks["spf"]["result"] == "fail" and checks["spf"]["points"] == 3
    [score] = logs.of("score")
    assert score["score"] == 6 and score["threshold"] == 5
    assert any("spf fail" in r for r in score["reasons"])


async def test_one_summary_line_per_message(dns_server: Dnsmasq) -> None:
    with captured_logs() as logs:
        async with dns_gateway(dns_server.address) as gw:
            assert (await gw.send(msg=sign(message()))).code("message") == 250
    [line] = logs.of("checks")
    assert line["results"] == [
        "fcrdns=pass",
        "helo=pass",
        "spf=pass",
        "dkim=pass",
        "dmarc=pass",
    ]
    assert line["score"] == 0 and line["refused"] is None


@pytest.mark.parametrize(
    ("msg", "answer"),
    [
        # a header block that parsers read differently: refused before any check reads it
        (b"garbage line\r\n\r\nbody\r\n", b"554 5.6.0 Message rejected: header line 1 "),
        (b"DKIM-Signature: v=1\r\nnot a header\r\n\r\nbody\r\n", b"554 5.6.0 "),
        (b"body without a header\r\n", b"554 5.6.0 "),
        (b" leading continuation\r\nDKIM-Signature: v=1; d=x\r\n\r\nbody\r\n", b"554 5.6.0 "),
        # well formed, a signature dkimpy cannot use: neutral, and scored as a failure
        (b"DKIM-Signature: v=1; garbage\r\nFrom: a@sender.test\r\n\r\nbody\r\n", b"250 "),
    ],
)
async def test_malformed_messages_get_an_answer_not_an_error(
    fake_dns: ZoneNameserver, msg: bytes, answer: bytes
) -> None:
    async with dns_gateway(fake_dns, **only(**{"dkim.action": "score"})) as gw:
        out = await gw.send(msg=msg)
        assert out.replies["message"].startswith(answer), out.replies
