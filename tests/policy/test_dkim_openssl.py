"""dkimpy's RSA verification done by OpenSSL (policy/dkim_openssl.py) gives dkimpy's own answer.

For every input, valid or not, the replacement returns what dkimpy's pure-Python function
returns, or raises the same exception: signatures made by OpenSSL for SHA-256 and SHA-1,
altered in each way that matters (a flipped bit, another digest, leading zero octets, too
short, the modulus added, random octets), with keys from 768 to 2048 bits and exponents 3 and
65537, and a key too small for the digest (dkimpy's DigestTooLargeError). Then the real use:
mailmoat's verifier on a signed message, with dkimpy's Python RSA never running.
"""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import dkim
import dkim.crypto
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.policy import dkim_openssl
from mailmoat.policy.dkim import DkimVerifier
from mailmoat.policy.dkim_openssl import rsassa_pkcs1_v1_5_verify
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message, sign
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

from .test_dkim_variants import as_message, small_rsa_key

PYTHON_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
KEYS = [(1024, 65537), (2048, 65537), (1024, 3), (768, 65537)]


@cache
def private_key(bits: int, exponent: int) -> rsa.RSAPrivateKey:
    if bits < 1024:  # the cryptography package makes none this small
        key = serialization.load_pem_private_key(small_rsa_key(bits).private, None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return key
    return rsa.generate_private_key(exponent, bits)


def public(bits: int, exponent: int) -> dict[str, int]:
    numbers = private_key(bits, exponent).public_key().public_numbers()
    return {"modulus": numbers.n, "publicExponent": numbers.e}


def signed(bits: int, exponent: int, name: str, data: bytes) -> bytes:
    algorithm = hashes.SHA256() if name == "sha256" else hashes.SHA1()
    return private_key(bits, exponent).sign(data, padding.PKCS1v15(), algorithm)


def outcome(function: Any, name: str, data: bytes, signature: bytes, key: dict[str, int]) -> Any:
    try:
        return function(hashlib.new(name, data), signature, key)
    except Exception as err:  # the same exception type is the same answer
        return type(err)


def alter(how: str, signature: bytes, key: dict[str, int], noise: bytes) -> bytes:
    n = key["modulus"]
    length = len(signature)
    if how == "flip":
        return bytes([signature[0] ^ 1]) + signature[1:]
    if how == "zero-prefixed":
        return b"\0" + signature
    if how == "short":
        return signature[:-1]
    if how == "plus-modulus":
        value = int.from_bytes(signature, "big") + n
        return value.to_bytes((value.bit_length() + 7) // 8, "big")
    if how == "random":
        return (noise * (length // max(len(noise), 1) + 1))[:length] if noise else b""
    if how == "empty":
        return b""
    return signature


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(KEYS),
    name=st.sampled_from(["sha256", "sha1"]),
    data=st.binary(max_size=64),
    other=st.binary(min_size=1, max_size=8),
    how=st.sampled_from(
        ["as-made", "flip", "zero-prefixed", "short", "plus-modulus", "random", "empty"]
    ),
    noise=st.binary(max_size=32),
    other_digest=st.booleans(),
)
def test_same_answer_as_dkimpy(
    key: tuple[int, int],
    name: str,
    data: bytes,
    other: bytes,
    how: str,
    noise: bytes,
    other_digest: bool,
) -> None:
    numbers = public(*key)
    signature = alter(how, signed(*key, name, data), numbers, noise)
    checked = data + other if other_digest else data
    ours = outcome(rsassa_pkcs1_v1_5_verify, name, checked, signature, numbers)
    assert ours == outcome(PYTHON_VERIFY, name, checked, signature, numbers)


@pytest.mark.parametrize("key", KEYS[:3])
@pytest.mark.parametrize("name", ["sha256", "sha1"])
def test_a_valid_signature_passes_and_an_altered_one_fails(key: tuple[int, int], name: str) -> None:
    numbers = public(*key)
    good = signed(*key, name, b"header hash input")
    assert rsassa_pkcs1_v1_5_verify(hashlib.new(name, b"header hash input"), good, numbers)
    assert not rsassa_pkcs1_v1_5_verify(hashlib.new(name, b"header hash inpuT"), good, numbers)
    for how in ("flip", "short"):
        bad = alter(how, good, numbers, b"")
        assert not rsassa_pkcs1_v1_5_verify(hashlib.new(name, b"header hash input"), bad, numbers)
    # as dkimpy: a number, so leading zeros and the modulus added still verify (dkim_rules
    # refuses both before dkimpy runs: RFC 8017 8.2.2 step 1, 5.2.2 step 1)
    for how in ("zero-prefixed", "plus-modulus"):
        odd = alter(how, good, numbers, b"")
        assert rsassa_pkcs1_v1_5_verify(hashlib.new(name, b"header hash input"), odd, numbers)


def test_a_key_too_small_for_the_digest_raises_as_dkimpy_does() -> None:
    # a 256-bit modulus (only its size matters here) cannot hold a SHA-256 DigestInfo
    p, q = 0xF0E4E6F4D6F0B5D1C1F8A4D62A5A8E0B, 0xC7A1E5D2B3F4A6C8D9E0F1A2B3C4D5E7
    key = {"modulus": p * q, "publicExponent": 65537}
    with pytest.raises(dkim.crypto.DigestTooLargeError):
        rsassa_pkcs1_v1_5_verify(hashlib.sha256(b"x"), b"\1" * 32, key)


def test_key_parse_is_dkimpys_and_a_copy() -> None:
    der = (
        private_key(1024, 65537)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    first = dkim_openssl.parse_public_key(der)
    assert first == dkim.crypto.parse_public_key(der)
    first["modulus"] = 7  # a caller changing its copy changes nobody else's
    assert dkim_openssl.parse_public_key(der) == dkim.crypto.parse_public_key(der)
    with pytest.raises(dkim.crypto.UnparsableKeyError):
        dkim_openssl.parse_public_key(b"\x30\x03\x02\x01")


async def test_mailmoats_verifier_never_runs_dkimpys_python_rsa(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A signed message passes, and dkimpy's own RSA (`rsa_encrypt`: a Python `pow` on the
    2048-bit modulus) never runs: OpenSSL did the work."""
    calls: list[object] = []
    python_rsa = dkim.crypto.rsa_encrypt

    def counted(*args: object) -> object:
        calls.append(args)
        return python_rsa(*args)

    monkeypatch.setattr(dkim.crypto, "rsa_encrypt", counted)
    verifier = DkimVerifier(fake_resolver(ZoneNameserver.from_dnsmasq(zone.records()), timeout=10))
    try:
        signed_message = sign(message())
        found = await verifier.verify(as_message(signed_message))
        assert [r.result for r in found] == ["pass"], found
        assert calls == []
        # dkimpy's Python RSA itself still gives the same answer (the spy is in its path)
        key = f"v=DKIM1; k=rsa; p={zone.dkim_keys().public_b64}".encode()
        monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_verify", PYTHON_VERIFY)
        assert dkim.verify(signed_message, dnsfunc=lambda name, timeout=5: key)
        assert len(calls) == 1
    finally:
        verifier.close()
