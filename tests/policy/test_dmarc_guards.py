"""DMARC promises that mutation testing (scripts/mutation over policy/dmarc.py) found nothing
holding: From fields of exactly `MAX_FROM_FIELD` octets in all are read and one octet more makes
the author unreadable, whatever the size of each field (the bound is on the sum, not met by a
field that jumps over it); a DKIM d= too long to be cached is judged (relaxed alignment by its
organizational domain) without entering the caches; of several authors, a temporary error
where the policy is none still outranks a pass (the header must not say dmarc=pass), and a
failure outranks a temporary error under the same policy; no author domain, or an unreadable
one among several, is refused as unreadable; the public suffix list is loaded once (a few
hundred ms of CPU each time); a From field too long to cache is read without entering the
cache, a short one is kept. `DmarcCheck`: with SPF and the policy at hand it decides at once;
with the SPF result still coming at the end of DATA, it waits for it; a failure counts for its
transaction only."""

from __future__ import annotations

import asyncio
import inspect

from mailmoat import config
from mailmoat.dns import Status
from mailmoat.headers import scan
from mailmoat.limits import DMARC_CACHED_LENGTH, MAX_AUTHOR_DOMAINS
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy import dmarc
from mailmoat.policy.base import Client
from mailmoat.policy.dmarc import (
    MAX_FROM_FIELD,
    UNREADABLE,
    UNREADABLE_AUTHOR,
    DmarcCheck,
    _without_policy,
    author_domains,
    combined,
    judge,
    strictest,
)
from mailmoat.policy.dmarc_record import parse_record
from mailmoat.policy.results import DMARC, SPF, DkimResult, DmarcResult, SpfResult, SpfResults
from mailmoat.policy.score import HEADERS_WANTED, Karma
from tests.support.dns_gateway import message
from tests.support.fake_dns import resolver as fake_resolver
from tests.support.fake_dns import world


def _field(domain: str, size: int) -> bytes:
    """A From field of exactly `size` octets, CRLF included."""
    start, end = b"From: (", f") a@{domain}\r\n".encode()
    return start + b"x" * (size - len(start) - len(end)) + end


def _authors(*fields: bytes) -> list[str]:
    return author_domains(scan([b"".join(fields) + b"Subject: x\r\n\r\nbody\r\n"], HEADERS_WANTED))


def test_from_fields_up_to_the_bound_are_read_past_it_unreadable() -> None:
    half = MAX_FROM_FIELD // 2
    assert _authors(_field("a.example", MAX_FROM_FIELD)) == ["a.example"]
    assert _authors(_field("a.example", half), _field("b.example", half)) == [
        "a.example",
        "b.example",
    ]
    assert _authors(_field("a.example", MAX_FROM_FIELD + 1)) == [UNREADABLE]
    # a field after the bound was met exactly: unreadable, not left out
    after = _authors(_field("a.example", MAX_FROM_FIELD), b"From: b@b.example\r\n")
    assert after == ["a.example", UNREADABLE]
    # the second field jumps over the bound: unreadable, never read as an author
    over = _authors(_field("a.example", half + 1), _field("b.example", half + 2))
    assert over == ["a.example", UNREADABLE]


def test_a_dkim_domain_too_long_to_cache_is_judged_and_not_cached() -> None:
    long_d = "x." * 300 + "sender.test"  # over DMARC_CACHED_LENGTH: the names are not kept
    record = parse_record(b"v=DMARC1; p=reject")
    spf = SpfResults(SpfResult("mailfrom", "other.test", "fail"), None)
    judged = dmarc._judged.cache_info()
    found = judge("sender.test", (Status.OK, record, False), spf, [DkimResult("pass", long_d)])
    assert (found.result, found.reason) == ("pass", f"aligned dkim {long_d}")
    strict = parse_record(b"v=DMARC1; p=reject; adkim=s")
    found = judge("sender.test", (Status.OK, strict, False), spf, [DkimResult("pass", long_d)])
    assert (found.result, found.disposition) == ("fail", "reject")
    assert dmarc._judged.cache_info() == judged  # neither looked up nor kept
    orgs = dmarc._org.cache_info()
    assert dmarc.organizational_domain(long_d) == "sender.test"
    assert dmarc._org.cache_info() == orgs


def test_a_temporary_error_under_p_none_outranks_a_pass() -> None:
    passed = DmarcResult("pass", "a.example", "reject", reason="aligned spf")
    temp = DmarcResult("temperror", "b.example", "none", reason="aligned SPF could not be checked")
    assert strictest([passed, temp]) is temp
    assert strictest([temp, passed]) is temp


def test_a_failure_outranks_a_temporary_error_under_the_same_policy() -> None:
    temp = DmarcResult("temperror", "a.example", "quarantine", reason="aligned SPF could not")
    failed = DmarcResult("fail", "b.example", "quarantine", "quarantine", reason="neither")
    assert strictest([temp, failed]) is failed


async def test_the_check_waits_for_spf_and_its_failure_counts_for_the_transaction() -> None:
    settings = config.build({"dmarc": {"quarantine_action": "score", "quarantine_points": 3}})
    karma = Karma(settings.score)
    resolver = fake_resolver(world())
    await resolver.query("_dmarc.soft.test", "TXT")  # the policy at hand: only SPF is missing
    check = DmarcCheck(settings.dmarc, resolver, karma)
    client = Client("192.0.2.81", 1)
    st = karma.state(client)
    spf: asyncio.Future[SpfResults] = asyncio.get_running_loop().create_future()
    st.start(SPF, spf)  # SPF still running at the end of DATA
    spool = Spool()
    spool.write(message("a@soft.test"))  # soft.test: p=quarantine
    decided = check.message(client, Message(Envelope("a@soft.test", ["b@x.test"]), spool, "Q1"))
    assert inspect.isawaitable(decided)
    spf.set_result(SpfResults(SpfResult("mailfrom", "soft.test", "softfail"), None))
    assert await decided is None  # scored, not refused
    assert (st.ready(DMARC).result, st.totals()) == ("fail", (3, 0))  # type: ignore[union-attr]
    st.new_transaction()  # the next MAIL FROM
    assert st.totals() == (0, 0)


def test_no_author_or_an_unreadable_one_is_refused_as_unreadable() -> None:
    for domains in ([], ["a.example", UNREADABLE]):
        found = _without_policy(domains)
        assert found is not None, domains
        assert (found.result, found.disposition, found.reason) == (
            "permerror",
            "reject",
            UNREADABLE_AUTHOR,
        ), domains


def test_the_public_suffix_list_is_loaded_once() -> None:
    assert dmarc._psl() is dmarc._psl()


def test_a_long_from_field_is_read_without_the_cache() -> None:
    info = dmarc._domains.cache_info
    long = _field("long.example", DMARC_CACHED_LENGTH + 1)
    before = info()
    assert _authors(long) == _authors(long) == ["long.example"]
    assert info() == before  # neither looked up nor kept
    short = _field("short.example", 100)
    assert _authors(short) == _authors(short) == ["short.example"]
    assert info().hits == before.hits + 1


async def test_with_spf_and_the_policy_at_hand_the_check_decides_at_once() -> None:
    settings = config.build({})
    resolver = fake_resolver(world())
    await resolver.query("_dmarc.soft.test", "TXT")
    check = DmarcCheck(settings.dmarc, resolver, Karma(settings.score))
    client = Client("192.0.2.82", 1)
    st = check.karma.state(client)
    st.set(SPF, SpfResults(SpfResult("mailfrom", "soft.test", "pass"), None))
    spool = Spool()
    spool.write(message("a@soft.test"))
    msg = Message(Envelope("a@soft.test", ["b@x.test"]), spool, "Q1")
    assert check.message(client, msg) is None  # a verdict, not a task
    assert st.ready(DMARC).result == "pass"  # type: ignore[union-attr]


def test_a_from_field_the_address_parser_fails_on_is_unreadable() -> None:
    """email.utils.getaddresses raises RecursionError on 1,100 ":": that author is one the
    check cannot read (refused under DMARC), not a crash of the check."""
    field = b"From: " + b":" * 900 + b"\r\n " + b":" * 200 + b"\r\n"
    assert _authors(field) == [UNREADABLE]
    found = _without_policy(_authors(field))
    assert found is not None and found.reason == UNREADABLE_AUTHOR


async def test_a_failure_under_p_none_gets_no_quarantine_points() -> None:
    """p=none asks for nothing: a message failing DMARC there is logged, never scored with
    the quarantine points (a domain's monitoring mode must not cost its mail anything)."""
    settings = config.build({"dmarc": {"quarantine_action": "score", "quarantine_points": 3}})
    karma = Karma(settings.score)
    check = DmarcCheck(settings.dmarc, fake_resolver(world()), karma)
    client = Client("192.0.2.82", 1)
    st = karma.state(client)
    done: asyncio.Future[SpfResults] = asyncio.get_running_loop().create_future()
    done.set_result(SpfResults(SpfResult("mailfrom", "none.test", "fail"), None))
    st.start(SPF, done)
    spool = Spool()
    spool.write(message("a@none.test"))  # none.test: p=none
    decided = check.message(client, Message(Envelope("a@none.test", ["b@x.test"]), spool, "Q2"))
    assert (await decided if inspect.isawaitable(decided) else decided) is None
    assert (st.ready(DMARC).result, st.totals()) == ("fail", (0, 0))  # type: ignore[union-attr]


def _r(result: str, policy: str, domain: str) -> DmarcResult:
    disposition = policy if result in ("fail", "permerror") else "none"
    return DmarcResult(result, domain, policy, disposition)


def test_a_temporary_error_under_quarantine_outranks_a_failure_under_p_none() -> None:
    """A 4xx (the policy may quarantine) asks more than a failure under p=none (nothing)."""
    results = [_r("fail", "none", "a.example"), _r("temperror", "quarantine", "b.example")]
    assert strictest(results).domain == "b.example"


def test_the_author_domains_past_the_bound_outrank_a_temporary_error_under_reject() -> None:
    """Past MAX_AUTHOR_DOMAINS the others count as failing under reject: a refusal, which
    asks more than the 4xx of a temporary error under reject."""
    results = [_r("temperror", "reject", "a.example")]
    domains = [f"d{i}.example" for i in range(MAX_AUTHOR_DOMAINS + 1)]
    assert combined(results, domains).result == "permerror"


def test_a_temporary_error_under_reject_outranks_a_failure_under_quarantine() -> None:
    """The policy that may reject asks a 4xx; a failure under quarantine only scores."""
    results = [_r("fail", "quarantine", "a.example"), _r("temperror", "reject", "b.example")]
    assert strictest(results).domain == "b.example"
