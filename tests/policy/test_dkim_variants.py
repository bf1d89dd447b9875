"""DKIM signature variants, made with dkimpy, through mailmoat's verifier (and once through a
whole gateway) with the keys served by the in-process test zone (tests/support/fake_dns.py).

ed25519-sha256 must pass (RFC 8463 makes verifiers implement it). The rest are signatures that
dkimpy 1.1.8 passes and that the RFCs make a verifier refuse: rsa-sha1 (RFC 8301 3.1), an RSA
key under 1024 bits (RFC 8301 3.2), a key whose h= leaves out the signature's hash, a t=s key
with i= in a subdomain of d= (RFC 6376 3.6.1), a signature that does not cover From (RFC 6376
5.4), a= naming another key type than the key's k= (RFC 6376 6.1.2), and an RSA signature that
is not exactly the modulus' length or not below the modulus (RFC 8017 8.2.2 step 1, 5.2.2
step 1). Variants dkimpy will not sign are made by changing the tags of a dkimpy signature and
signing it again with dkimpy's own primitives (`resign`).
"""

from __future__ import annotations

import base64
import math
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache

import dkim
import dkim.crypto
import dkim.util
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.canonicalization import CanonicalizationPolicy

from mailmoat import config
from mailmoat.dns import Resolver
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy.dkim import DkimVerifier
from mailmoat.policy.results import DkimResult
from tests.support import dns_zone as zone
from tests.support.dns_gateway import dns_gateway, message
from tests.support.dns_records import Record
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver
from tests.support.zone_server import zone_server

DOMAIN = "sender.test"


# --- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    private: bytes
    """What dkimpy signs with: PEM for RSA, the base64 seed for ed25519."""
    public_b64: str
    kind: str = "rsa"


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _rsa(key: rsa.RSAPrivateKey) -> Key:
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(_pem(key), base64.b64encode(public).decode())


@cache
def rsa_key(bits: int) -> Key:
    return _rsa(rsa.generate_private_key(public_exponent=65537, key_size=bits))


def _prime(bits: int, rng: random.Random) -> int:
    """A random prime of `bits` bits (Miller-Rabin, 40 rounds)."""
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(n % p for p in (3, 5, 7, 11, 13, 17, 19, 23, 29, 31)) and _probably_prime(n, rng):
            return n


def _probably_prime(n: int, rng: random.Random) -> bool:
    d, r = n - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for _ in range(40):
        x = pow(rng.randrange(2, n - 1), d, n)
        if x in (1, n - 1):
            continue
        for _ in range(r - 1):
            x = pow(x, 2, n)
            if x == n - 1:
                break
        else:
            return False
    return True


@cache
def small_rsa_key(bits: int = 768) -> Key:
    """An RSA key too small for RFC 8301 (the cryptography package will not make one)."""
    rng = random.Random(8301)
    e = 65537
    while True:
        p, q = _prime(bits // 2, rng), _prime(bits // 2, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e and (p * q).bit_length() == bits:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return _rsa(numbers.private_key())


@cache
def big_exponent_key() -> Key:
    """A valid 2048-bit key whose public exponent is 2040 bits long (RFC 8017 allows it)."""
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_numbers()
    p, q = k.p, k.q
    lam = (p - 1) * (q - 1) // math.gcd(p - 1, q - 1)
    rng = random.Random(8017)
    e = 3
    while math.gcd(e, lam) != 1 or e == 3:
        e = rng.getrandbits(2040) | 1 | (1 << 2039)
    d = pow(e, -1, lam)
    numbers = rsa.RSAPrivateNumbers(
        p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), rsa.RSAPublicNumbers(e, p * q)
    )
    return _rsa(numbers.private_key())


@cache
def huge_public_key() -> Key:
    """An 8200-bit public key (no private half: the zone's key signs, so it cannot verify)."""
    n = random.Random(8200).getrandbits(8200) | 1 | (1 << 8199)
    public = rsa.RSAPublicNumbers(65537, n).public_key()
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key(zone.dkim_keys().private_pem, base64.b64encode(der).decode())


@cache
def ed25519_key() -> Key:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return Key(base64.b64encode(seed), base64.b64encode(public).decode(), "ed25519")


KEY_TAGS = {
    # selector: extra tags of its key record
    "ed": "",  # ed25519
    "plain": "",  # the zone's 2048-bit RSA key
    "hsha1": "h=sha1; ",
    "hboth": "h=sha1:sha256; ",
    "strict": "t=s; ",
    "ystrict": "t=y:s; ",
    "odd": "",  # 2047 bits
    "small": "",  # 768 bits
    "bigexp": "",  # 2048 bits, a 2040-bit public exponent
}


def key_for(selector: str) -> Key:
    if selector == "ed":
        return ed25519_key()
    if selector == "odd":
        return rsa_key(2047)
    if selector == "small":
        return small_rsa_key()
    if selector == "bigexp":
        return big_exponent_key()
    if selector == "huge":
        return huge_public_key()
    return Key(zone.dkim_keys().private_pem, zone.dkim_keys().public_b64)


def key_record(selector: str) -> bytes:
    key = key_for(selector)
    return f"v=DKIM1; k={key.kind}; {KEY_TAGS.get(selector, '')}p={key.public_b64}".encode()


def key_records() -> list[str]:
    return [
        f'txt-record={selector}._domainkey.{DOMAIN},"{key_record(selector).decode()}"'
        for selector in KEY_TAGS
    ]


@pytest.fixture(scope="module")
def keys_dns() -> ZoneNameserver:
    return ZoneNameserver.from_dnsmasq(zone.records() + key_records())


@pytest.fixture
async def verifier(keys_dns: ZoneNameserver) -> AsyncIterator[DkimVerifier]:
    v = DkimVerifier(fake_resolver(keys_dns, timeout=2.0))
    try:
        yield v
    finally:
        v.close()


# --- signing -------------------------------------------------------------------------------------

HEADERS = [b"from", b"to", b"subject", b"message-id"]


def signature(
    msg: bytes,
    selector: str,
    algorithm: bytes = b"rsa-sha256",
    identity: bytes | None = None,
    include: list[bytes] = HEADERS,
) -> bytes:
    """dkimpy's DKIM-Signature header field (with its CRLF) for `msg`."""
    return dkim.sign(  # type: ignore[no-any-return]
        msg,
        selector.encode(),
        DOMAIN.encode(),
        key_for(selector).private,
        identity=identity,
        signature_algorithm=algorithm,
        include_headers=include,
    )


def _fields(header: bytes) -> dict[bytes, bytes]:
    value = header.split(b":", 1)[1]
    return {k: re.sub(rb"\s+", b"", v) for k, v in dkim.util.parse_tag_value(value).items()}


def _header(fields: dict[bytes, bytes]) -> bytes:
    return b"DKIM-Signature: " + b"; ".join(k + b"=" + v for k, v in fields.items()) + b"\r\n"


def with_b(header: bytes, b: bytes) -> bytes:
    """The same signature with another b= value (b= is not part of what is signed)."""
    name, value = header.split(b":", 1)
    value = dkim.RE_BTAG.sub(lambda m: m.group(1) + base64.b64encode(b), value.rstrip(b"\r\n"))
    return name + b":" + value + b"\r\n"


def b_of(header: bytes) -> bytes:
    return base64.b64decode(_fields(header)[b"b"])


def resign(msg: bytes, header: bytes, selector: str, **changes: str) -> bytes:
    """A dkimpy RSA signature with some tags changed, signed again with dkimpy's primitives
    (for variants dkimpy's signer refuses to make, such as one without From in h=)."""
    fields = {**_fields(header), **{k.encode(): v.encode() for k, v in changes.items()}}
    fields[b"b"] = b""
    unsigned = _header(fields)
    canon = CanonicalizationPolicy.from_c_value(fields[b"c"])
    include = [x.lower() for x in fields[b"h"].split(b":")]
    hasher = dkim.HASH_ALGORITHMS[fields[b"a"]]()
    headers = canon.canonicalize_headers(dkim.DKIM(msg).headers)
    name, value = unsigned.rstrip(b"\r\n").split(b":", 1)
    dkim.hash_headers(hasher, canon, headers, include, (name, value), fields)
    key = dkim.crypto.parse_pem_private_key(key_for(selector).private)
    return with_b(unsigned, dkim.crypto.RSASSA_PKCS1_v1_5_sign(hasher, key))


def as_message(data: bytes) -> Message:
    spool = Spool()
    spool.write(data)
    return Message(Envelope(f"a@{DOMAIN}", ["alice@example.test"]), spool, "Q1")


async def results(v: DkimVerifier, *headers: bytes, msg: bytes | None = None) -> list[DkimResult]:
    return await v.verify(as_message(b"".join(headers) + (msg or message())))


def outcome(found: list[DkimResult]) -> list[tuple[str, str]]:
    return [(r.selector, r.result) for r in found]


# --- ed25519 (RFC 8463) --------------------------------------------------------------------------


async def test_ed25519_signature_passes(verifier: DkimVerifier) -> None:
    msg = message()
    found = await results(verifier, signature(msg, "ed", b"ed25519-sha256"), msg=msg)
    assert outcome(found) == [("ed", "pass")], found


async def test_message_signed_with_rsa_and_ed25519_passes_both(verifier: DkimVerifier) -> None:
    msg = message()
    both = [signature(msg, "ed", b"ed25519-sha256"), signature(msg, "plain")]
    assert outcome(await results(verifier, *both, msg=msg)) == [("ed", "pass"), ("plain", "pass")]


async def test_tampered_ed25519_signature_fails(verifier: DkimVerifier) -> None:
    msg = message()
    header = signature(msg, "ed", b"ed25519-sha256")
    found = await results(verifier, header, msg=msg.replace(b"test of", b"test 0f"))
    assert outcome(found) == [("ed", "fail")]


async def test_ed25519_only_message_from_a_reject_domain_is_accepted(
    keys_dns: ZoneNameserver,
) -> None:
    """sender.test publishes p=reject and its SPF fails for this client: only the ed25519
    signature can make DMARC pass."""
    msg = message()
    signed = signature(msg, "ed", b"ed25519-sha256") + msg
    async with dns_gateway(
        keys_dns, **{"spf.action": "log", "fcrdns.action": "log", "helo.action": "log"}
    ) as gw:
        out = await gw.send(source=zone.NOPTR_IP, msg=signed)
        assert out.code("message") == 250, out.replies
        [delivered] = gw.downstream.messages
    head = delivered.split(b"\r\n\r\n", 1)[0]
    assert b"spf=fail" in head
    assert b"dkim=pass header.d=sender.test header.s=ed" in head
    assert b"dmarc=pass" in head


# --- RFC 8301 ------------------------------------------------------------------------------------


async def test_rsa_sha1_signature_fails(verifier: DkimVerifier) -> None:
    msg = message()
    [r] = await results(verifier, signature(msg, "plain", b"rsa-sha1"), msg=msg)
    assert (r.result, "RFC 8301" in r.reason) == ("fail", True), r


async def test_rsa_key_under_1024_bits_fails(verifier: DkimVerifier) -> None:
    msg = message()
    [r] = await results(verifier, signature(msg, "small"), msg=msg)
    assert (r.result, "768" in r.reason) == ("fail", True), r


# --- the key record (RFC 6376 3.6.1) -------------------------------------------------------------


async def test_key_h_tag_must_list_the_signature_hash(verifier: DkimVerifier) -> None:
    msg = message()
    found = await results(verifier, signature(msg, "hsha1"), signature(msg, "hboth"), msg=msg)
    assert outcome(found) == [("hsha1", "fail"), ("hboth", "pass")], found
    assert "h=" in found[0].reason


@pytest.mark.parametrize("selector", ["strict", "ystrict"])
async def test_strict_key_refuses_an_identity_in_a_subdomain(
    verifier: DkimVerifier, selector: str
) -> None:
    msg = message()
    same = signature(msg, selector, identity=b"a@sender.test")
    sub = signature(msg, selector, identity=b"a@mail.sender.test")
    assert outcome(await results(verifier, same, msg=msg)) == [(selector, "pass")]
    [r] = await results(verifier, sub, msg=msg)
    assert (r.result, "t=s" in r.reason) == ("fail", True), r


async def test_key_type_must_match_the_signature_algorithm(verifier: DkimVerifier) -> None:
    """An RSA signature calling itself ed25519-sha256 (dkimpy goes by the key alone)."""
    msg = message()
    header = resign(msg, signature(msg, "plain"), "plain", a="ed25519-sha256")
    [r] = await results(verifier, header, msg=msg)
    assert (r.result, "k=rsa" in r.reason) == ("fail", True), r


# --- the signature -------------------------------------------------------------------------------


async def test_signature_must_cover_from(verifier: DkimVerifier) -> None:
    msg = message()
    header = resign(msg, signature(msg, "plain"), "plain", h="to:subject:message-id")
    control = resign(msg, signature(msg, "plain"), "plain", h="from:subject:message-id")
    assert outcome(await results(verifier, control, msg=msg)) == [("plain", "pass")]
    [r] = await results(verifier, header, msg=msg)
    assert (r.result, "From" in r.reason) == ("fail", True), r


async def test_rsa_signature_longer_than_the_modulus_fails(verifier: DkimVerifier) -> None:
    msg = message()
    header = signature(msg, "plain")
    longer = with_b(header, b"\x00" + b_of(header))
    [r] = await results(verifier, longer, msg=msg)
    assert (r.result, "modulus" in r.reason) == ("fail", True), r


async def test_rsa_signature_not_below_the_modulus_fails(verifier: DkimVerifier) -> None:
    """s + n has the modulus' length (a 2047-bit key) and the same value modulo n."""
    msg = message()
    header = signature(msg, "odd")
    assert outcome(await results(verifier, header, msg=msg)) == [("odd", "pass")]
    n = dkim.crypto.parse_pem_private_key(key_for("odd").private)["modulus"]
    s = int.from_bytes(b_of(header), "big")
    [r] = await results(verifier, with_b(header, (s + n).to_bytes(256, "big")), msg=msg)
    assert (r.result, "modulus" in r.reason) == ("fail", True), r


# --- bounds on the work one signature may cost (invariant 3) ------------------------------------


async def test_rsa_key_with_a_long_public_exponent_is_refused_before_verifying(
    verifier: DkimVerifier,
) -> None:
    """A valid signature, but the exponent the sender chose would make every verification
    cost as much as a private-key operation (a second or more on large keys)."""
    msg = message()
    header = signature(msg, "bigexp")
    good = dkim.verify(header + msg, dnsfunc=lambda name, timeout=5: key_record("bigexp"))
    assert good  # dkimpy, given the time, verifies it
    [r] = await results(verifier, header, msg=msg)
    assert (r.result, "exponent" in r.reason) == ("fail", True), r


async def test_rsa_key_over_8192_bits_is_refused_before_verifying() -> None:
    """Its record is too long for a dnsmasq configuration line: zone_server.py serves it (in
    several strings, over TCP after a truncated UDP answer)."""
    msg = message()
    with zone_server() as server:
        server.serve({f"huge._domainkey.{DOMAIN}": [Record("TXT", (key_record("huge"),))]})
        settings = config.build({"dns": {"nameservers": [server.address], "timeout": 2.0}})
        v = DkimVerifier(Resolver(settings.dns))
        try:
            [r] = await results(v, signature(msg, "huge"), msg=msg)
        finally:
            v.close()
    assert (r.result, "over 8192" in r.reason) == ("fail", True), r
