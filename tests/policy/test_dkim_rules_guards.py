"""DKIM rule promises that mutation testing (scripts/mutation over policy/dkim_rules.py) found
nothing holding: a= must name the key's own type both ways round (an ed25519 key never
verifies an rsa-sha256 signature); a 1024-bit RSA key is allowed (RFC 8301 3.2: 1024 and
over); an RSA signature is exactly as long as the modulus in octets, rounded up (RFC 8017
8.2.2), also for a modulus one bit over a whole octet, and below the modulus (equal is
refused); an RSA key of exactly `MAX_RSA_BITS`, or with an exponent of exactly
`MAX_RSA_EXPONENT_BITS`, is allowed; i= in a subdomain of d= is refused only with t=s; a key
record that is not a tag list, or whose key cannot be read, is left to dkimpy (no exception).
The keys are public halves built from numbers: the rules read the key and the signature's
length, not its mathematics."""

from __future__ import annotations

import base64
import random

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailmoat.limits import MAX_RSA_BITS, MAX_RSA_EXPONENT_BITS
from mailmoat.policy.dkim_rules import refusal


def _modulus(bits: int) -> int:
    return random.Random(bits).getrandbits(bits) | 1 | (1 << (bits - 1))


def _rsa_record(bits: int, exponent: int = 65537, tags: bytes = b"") -> bytes:
    der = (
        rsa.RSAPublicNumbers(exponent, _modulus(bits))
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return b"v=DKIM1; k=rsa; " + tags + b"p=" + base64.b64encode(der)


def _fields(algorithm: bytes, signature: bytes = b"\x01") -> dict[bytes, bytes]:
    return {
        b"a": algorithm,
        b"h": b"from:to",
        b"d": b"sender.test",
        b"b": base64.b64encode(signature),
    }


def test_the_key_type_must_match_a_both_ways() -> None:
    ed_key = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(32))
    assert "does not sign" in refusal(_fields(b"rsa-sha256"), ed_key)
    assert "does not sign" in refusal(_fields(b"ed25519-sha256"), _rsa_record(2048))


def test_a_1024_bit_key_is_allowed() -> None:
    assert refusal(_fields(b"rsa-sha256", b"\x01".rjust(128, b"\x00")), _rsa_record(1024)) == ""
    assert "under 1024" in refusal(
        _fields(b"rsa-sha256", b"\x01".rjust(128, b"\x00")), _rsa_record(1023)
    )


def test_the_signature_is_as_long_as_the_modulus_rounded_up() -> None:
    key = _rsa_record(2049)  # 257 octets
    assert refusal(_fields(b"rsa-sha256", b"\x01".rjust(257, b"\x00")), key) == ""
    assert "RFC 8017" in refusal(_fields(b"rsa-sha256", b"\x01".rjust(256, b"\x00")), key)


def test_a_signature_equal_to_the_modulus_is_refused() -> None:
    modulus = _modulus(2048).to_bytes(256, "big")
    assert "RFC 8017" in refusal(_fields(b"rsa-sha256", modulus), _rsa_record(2048))


def test_the_largest_key_and_exponent_allowed() -> None:
    largest = _fields(b"rsa-sha256", b"\x01".rjust(MAX_RSA_BITS // 8, b"\x00"))
    assert refusal(largest, _rsa_record(MAX_RSA_BITS)) == ""
    exponent = (1 << (MAX_RSA_EXPONENT_BITS - 1)) | 1
    signature = _fields(b"rsa-sha256", b"\x01".rjust(256, b"\x00"))
    assert refusal(signature, _rsa_record(2048, exponent)) == ""
    assert "exponent" in refusal(signature, _rsa_record(2048, exponent << 1 | 1))


def test_a_subdomain_identity_is_refused_only_with_t_s() -> None:
    fields = {**_fields(b"rsa-sha256", b"\x01".rjust(256, b"\x00")), b"i": b"@mail.sender.test"}
    assert refusal(fields, _rsa_record(2048)) == ""
    assert "t=s" in refusal(fields, _rsa_record(2048, tags=b"t=s; "))
    later = {**fields, b"i": b"@z.sender.test"}  # sorts after d=: refused all the same
    assert "t=s" in refusal(later, _rsa_record(2048, tags=b"t=s; "))


def test_a_key_record_that_is_not_a_tag_list_is_left_to_dkimpy() -> None:
    for record in (b"v=DKIM1; p=a; p=b", b"no tags here", b"v=DKIM1; k=rsa; p=AAAA"):
        assert refusal(_fields(b"rsa-sha256"), record) == "", record
