"""DKIM signatures that get dkim=policy (RFC 8601 2.7.1) without being verified (issue 10, the
third red-team probe): an h= whose work is unbounded (dkimpy looks for each name through every
header field: 6,000 names over 40,000 fields cost 17 s of CPU per message), and an l= that
does not cover the whole body (RFC 6376 8.2: content appended after the signed part). Each is
a valid signature dkimpy would pass; none may pass or count for DMARC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import dkim
import pytest

from mailmoat.limits import DKIM_MAX_HEADER_WORK, DKIM_MAX_SIGNED_NAMES
from mailmoat.policy.dkim import DkimVerifier
from tests.policy.test_dkim_variants import (
    DOMAIN,
    key_for,
    key_records,
    outcome,
    resign,
    results,
    signature,
)
from tests.support import dns_zone as zone
from tests.support.dns_gateway import dns_gateway, message
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver


@pytest.fixture(scope="module")
def keys() -> ZoneNameserver:
    return ZoneNameserver.from_dnsmasq(zone.records() + key_records())


@pytest.fixture
async def verifier(keys: ZoneNameserver) -> AsyncIterator[DkimVerifier]:
    v = DkimVerifier(fake_resolver(keys, timeout=2.0))
    try:
        yield v
    finally:
        v.close()


def _absent(count: int) -> str:
    """`count` names of header fields the message does not have, after from."""
    return ":".join(["from", *(f"x-absent-{i}" for i in range(count))])


async def test_too_many_names_in_h_is_policy_not_pass(verifier: DkimVerifier) -> None:
    msg = message()
    header = resign(msg, signature(msg, "plain"), "plain", h=_absent(DKIM_MAX_SIGNED_NAMES))
    [r] = await results(verifier, header, msg=msg)
    assert (r.result, r.reason) == (
        "policy",
        f"h= lists {DKIM_MAX_SIGNED_NAMES + 1} header fields, over {DKIM_MAX_SIGNED_NAMES}",
    ), r
    # one name fewer: the same signature is verified and passes
    header = resign(msg, signature(msg, "plain"), "plain", h=_absent(DKIM_MAX_SIGNED_NAMES - 1))
    assert outcome(await results(verifier, header, msg=msg)) == [("plain", "pass")]


async def test_h_names_times_header_fields_past_the_bound_is_policy(
    keys: ZoneNameserver,
) -> None:
    """The probe's message, smaller: 50 names in h= over a header of many empty fields. On a
    verifier with one worker, a normal message sent with it is verified too (and passes)."""
    names = 50
    fields = DKIM_MAX_HEADER_WORK // names + 1
    msg = message(extra="X-Pad:\r\n" * fields)
    heavy = resign(msg, signature(msg, "plain"), "plain", h=_absent(names - 1))
    normal = message()
    one = DkimVerifier(fake_resolver(keys, timeout=2.0), workers=1)
    try:
        [r], [ok] = await asyncio.gather(
            results(one, heavy, msg=msg), results(one, signature(normal, "plain"), msg=normal)
        )
    finally:
        one.close()
    assert r.result == "policy" and "too much work" in r.reason, r
    assert ok.result == "pass", ok


async def test_l_shorter_than_the_body_is_policy_equal_passes(verifier: DkimVerifier) -> None:
    msg = message(body="Pay the invoice.\r\n")
    header = dkim.sign(msg, b"plain", DOMAIN.encode(), key_for("plain").private, length=True)
    assert b"l=" in header
    # l= covers the whole body: it passes
    assert outcome(await results(verifier, header, msg=msg)) == [("plain", "pass")]
    # content appended after the signed part: dkimpy passes it, mailmoat does not
    appended = msg + b"Actually, pay account 666 instead.\r\n"
    assert dkim.verify(header + appended, dnsfunc=lambda *_, **__: _key_record())
    [r] = await results(verifier, header, msg=appended)
    assert r.result == "policy" and "RFC 6376 8.2" in r.reason, r
    # an l= past the end of the body (dkimpy hashes what there is, and passes it)
    past = resign(msg, header, "plain", l=str(len(msg.split(b"\r\n\r\n", 1)[1]) + 10))
    [r] = await results(verifier, past, msg=msg)
    assert r.result == "policy" and "RFC 6376 8.2" in r.reason, r


def _key_record() -> bytes:
    return f"v=DKIM1; k=rsa; p={key_for('plain').public_b64}".encode()


async def test_l_short_signature_gives_no_dmarc_pass(fake_dns: ZoneNameserver) -> None:
    """sender.test publishes p=reject; this client fails SPF for it: only the DKIM signature
    could make DMARC pass, and with content appended past l= it must not."""
    msg = message(body="Pay the invoice.\r\n")
    header = dkim.sign(
        msg,
        zone.SELECTOR.encode(),
        DOMAIN.encode(),
        zone.dkim_keys().private_pem,
        include_headers=[b"from", b"to", b"subject"],
        length=True,
    )
    appended = header + msg + b"Actually, pay account 666 instead.\r\n"
    overrides = {"spf.action": "log", "fcrdns.action": "log", "helo.action": "log"}
    async with dns_gateway(fake_dns, **overrides) as gw:
        out = await gw.send(source=zone.NOPTR_IP, msg=appended)
        assert out.code("message") == 550, out.replies
        assert not gw.downstream.messages
        # the same message without the appended line passes DMARC through the signature
        out = await gw.send(source=zone.NOPTR_IP, msg=header + msg)
        assert out.code("message") == 250, out.replies
        [delivered] = gw.downstream.messages
    head = delivered.split(b"\r\n\r\n", 1)[0]
    assert b"dkim=pass" in head and b"dmarc=pass" in head
