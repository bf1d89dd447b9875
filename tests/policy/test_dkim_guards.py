"""DKIM promises that mutation testing (scripts/mutation over policy/dkim.py) found nothing
holding: a signature whose key is not published or cannot be looked up, or that cannot be
parsed or that dkimpy fails by raising, does not stop the signatures after it from being verified (a
later valid one still passes); the key record that dkim_rules judges is the one dkimpy
verifies with, so a second record at the selector cannot slip a key past the rules; a message
gets one result per DKIM-Signature field, whatever other fields it has; a signed message dkimpy
cannot parse is neutral (not unsigned); header.b gets the first 8 characters of b= (RFC 6008).
`DkimCheck`: an unsigned message in memory is decided at once (no thread); under `log` the
result is still recorded; a result counts for its transaction only (its points go with the
next MAIL). The keys come from the in-process test zone (tests/support/fake_dns.py)."""

from __future__ import annotations

import inspect
import re
from collections.abc import AsyncIterator

import pytest

from mailmoat import config
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy.base import Client
from mailmoat.policy.dkim import DkimCheck, DkimVerifier
from mailmoat.policy.score import Karma
from tests.policy.test_dkim_variants import (
    DOMAIN,
    _fields,
    key_for,
    outcome,
    results,
    rsa_key,
    signature,
)
from tests.support.dns_gateway import message
from tests.support.dns_records import TIMEOUT, from_dnsmasq
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

ZONE_KEY = key_for("plain").public_b64
OTHER_KEY = rsa_key(2048).public_b64  # a valid key that signs nothing here


KEYS = [
    f'txt-record=plain._domainkey.{DOMAIN},"v=DKIM1; k=rsa; p={ZONE_KEY}"',
    # two key records at one selector (RFC 6376 3.6.2.2: the result is undefined): the
    # signer's key, and another one the rules refuse for a sha256 signature
    f'txt-record=two._domainkey.{DOMAIN},"v=DKIM1; k=rsa; p={ZONE_KEY}"',
    f'txt-record=two._domainkey.{DOMAIN},"v=DKIM1; k=rsa; h=sha1; p={OTHER_KEY}"',
]


@pytest.fixture
async def verifier() -> AsyncIterator[DkimVerifier]:
    v = DkimVerifier(fake_resolver(ZoneNameserver.from_dnsmasq(KEYS), timeout=2.0))
    try:
        yield v
    finally:
        v.close()


async def test_a_signature_without_a_key_does_not_end_the_verification(
    verifier: DkimVerifier,
) -> None:
    msg = message()
    unpublished = signature(msg, "gone")  # no key at gone._domainkey
    found = await results(verifier, unpublished, signature(msg, "plain"), msg=msg)
    assert outcome(found) == [("gone", "permerror"), ("plain", "pass")], found
    # nor does one that cannot be parsed (no b=, bh=, h=, s=)
    broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test\r\n"
    found = await results(verifier, broken, signature(msg, "plain"), msg=msg)
    assert [r.result for r in found] == ["neutral", "pass"], found
    # nor one that dkimpy fails by raising (an unknown canonicalization)
    bogus = re.sub(rb"c=[a-z]+/[a-z]+", b"c=bogus/bogus", signature(msg, "plain"))
    found = await results(verifier, bogus, signature(msg, "plain"), msg=msg)
    assert [r.result for r in found] == ["fail", "pass"], found
    assert "c= value" in found[0].reason, found


async def test_a_key_lookup_that_fails_does_not_end_the_verification() -> None:
    zone = from_dnsmasq(KEYS)
    zone[f"slow._domainkey.{DOMAIN}"] = [TIMEOUT]
    v = DkimVerifier(fake_resolver(ZoneNameserver(zone), timeout=0.3))
    try:
        msg = message()
        found = await results(v, signature(msg, "slow"), signature(msg, "plain"), msg=msg)
        assert outcome(found) == [("slow", "temperror"), ("plain", "pass")], found
    finally:
        v.close()


async def test_the_key_the_rules_judge_is_the_key_that_verifies() -> None:
    """The first record of the answer is the key for dkim_rules and dkimpy alike: with the
    signer's key first, the signature passes; had the rules judged the other record, or dkimpy
    verified with it, it would fail."""
    zone = ZoneNameserver.from_dnsmasq(KEYS)
    for _ in range(64):  # the server shuffles the two records: an answer with the signer's first
        v = DkimVerifier(fake_resolver(zone, timeout=2.0))
        answer = await v.resolver.query(f"two._domainkey.{DOMAIN}", "TXT")  # now cached
        if ZONE_KEY.encode() in answer.records[0]:
            break
        v.close()
    try:
        assert ZONE_KEY.encode() in answer.records[0], answer
        msg = message()
        [r] = await results(v, signature(msg, "two"), msg=msg)  # signed with ZONE_KEY's key
        assert (r.selector, r.result, r.reason) == ("two", "pass", ""), r
    finally:
        v.close()


async def test_one_result_per_signature_whatever_the_other_fields(verifier: DkimVerifier) -> None:
    # field names that sort before "dkim-signature" are not signatures
    msg = message(extra="Date: Thu, 3 Dec 2026 12:00:00 +0000\r\nCc: b@example.test\r\n")
    header = signature(msg, "plain")
    [r] = await results(verifier, header, msg=msg)
    assert (r.selector, r.result) == ("plain", "pass"), r
    assert r.b == _fields(header)[b"b"].decode()[:8]  # RFC 6008: header.b, 8 characters


async def test_a_signed_message_dkimpy_cannot_parse_is_neutral(verifier: DkimVerifier) -> None:
    msg = message()
    broken = signature(msg, "plain") + b"not a header field\r\n"
    [r] = await results(verifier, broken, msg=msg)
    assert (r.result, r.reason.startswith("message not parseable")) == ("neutral", True), r
    # the same break in a message without a signature (only its body names one): nothing
    unsigned = message(body="The DKIM-Signature field is missing.\r\n")
    assert await results(verifier, b"not a header field\r\n", msg=unsigned) == []


def _check(verifier: DkimVerifier, **dkim: object) -> DkimCheck:
    settings = config.build({"dkim": dkim})
    return DkimCheck(settings.dkim, verifier.resolver, Karma(settings.score))


def _message(data: bytes) -> Message:
    spool = Spool()
    spool.write(data)
    return Message(Envelope(f"a@{DOMAIN}", ["alice@example.test"]), spool, "Q1")


async def test_the_check_decides_an_unsigned_message_at_once_and_records_it(
    verifier: DkimVerifier,
) -> None:
    check = _check(verifier, action="log")
    try:
        client = Client("192.0.2.70", 1)
        assert check.message(client, _message(message())) is None  # a verdict, not a task
        assert check.karma.state(client).tx_outcomes["dkim"].result == "none"
    finally:
        await check.close()


async def test_a_result_counts_for_its_transaction_only(verifier: DkimVerifier) -> None:
    check = _check(verifier, action="score", points=2)
    try:
        client = Client("192.0.2.71", 1)
        st = check.karma.state(client)
        broken = b"DKIM-Signature: v=1; a=rsa-sha256; d=sender.test\r\n" + message()
        decided = check.message(client, _message(broken))
        assert inspect.isawaitable(decided)  # verified in a worker thread
        assert await decided is None
        assert (st.tx_outcomes["dkim"].result, st.totals()) == ("neutral", (2, 0))
        st.new_transaction()  # the next MAIL FROM
        assert st.totals() == (0, 0)
    finally:
        await check.close()
