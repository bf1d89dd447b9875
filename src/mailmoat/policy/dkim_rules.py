"""What RFC 6376, 8301 and 8017 make a DKIM verifier refuse, checked before dkimpy verifies.

dkimpy 1.1.8 passes signatures that these RFCs say must not pass, so mailmoat checks each
signature against its key record first and fails it with the reason:

* rsa-sha1 (RFC 8301 3.1: verifiers MUST NOT consider it valid);
* an RSA key under 1024 bits (RFC 8301 3.2; dkimpy checks this only after the RSA work);
* a key whose h= does not list the signature's hash (RFC 6376 3.6.1, 6.1.2);
* a key whose t= has the flag s, with i= in a subdomain of d= (RFC 6376 3.6.1);
* a= naming another key type than the key's k= (RFC 6376 6.1.2: dkimpy goes by k= alone);
* h= without From (RFC 6376 5.4, 6.1.1: the From field MUST be signed);
* an RSA signature that is not exactly as long as the modulus, or not below it (RFC 8017
  8.2.2 step 1 and 5.2.2 step 1: dkimpy reads it as a number, so leading zero octets, or the
  signature plus the modulus, verify too);
* an RSA key over 8192 bits or with a public exponent over 64 bits: not the RFCs' rule but a
  bound on the work one signature may cost (invariant 3), as OpenSSL bounds it.

Two more make a signature `dkim=policy` (RFC 8601 2.7.1: signed, but not acceptable here)
rather than fail: it is not verified, never passes and never counts for DMARC (`unacceptable`):

* an l= that is not the canonicalized body's length (RFC 6376 8.2: content appended after the
  signed part, or a count past the end, would pass under a signature that does not cover it);
* a signature whose work is unbounded: more than DKIM_MAX_SIGNED_NAMES names in h=, or h=
  names x header fields over DKIM_MAX_HEADER_WORK (dkimpy looks for each name through every
  field; invariant 3). "policy" and not "permerror": the signature is well formed, it is our
  bound that refuses it.

Each of these belongs upstream in dkimpy's verify (validate_signature_fields, evaluate_pk,
RSASSA_PKCS1_v1_5_verify); until then it is checked here. A key record or signature too broken
to read is left to dkimpy, which fails it.
"""

from __future__ import annotations

import base64
import binascii
import re
from functools import lru_cache

import dkim.util
from dkim.canonicalization import CanonicalizationPolicy, InvalidCanonicalizationPolicyError
from dkim.crypto import UnparsableKeyError, parse_public_key

from mailmoat.limits import DKIM_CACHED_RECORD as CACHED_RECORD
from mailmoat.limits import DKIM_KEYS_KEPT as KEYS_KEPT
from mailmoat.limits import DKIM_MAX_HEADER_WORK as MAX_HEADER_WORK
from mailmoat.limits import DKIM_MAX_SIGNED_NAMES as MAX_SIGNED_NAMES
from mailmoat.limits import MAX_RSA_BITS, MAX_RSA_EXPONENT_BITS

MIN_RSA_BITS = 1024
"""RFC 8301 3.2."""


def _key_tags(record: bytes) -> dict[bytes, bytes] | None:
    """The key record's tags (cached when short: the same keys sign most mail; never
    changed)."""
    return _cached_tags(record) if len(record) <= CACHED_RECORD else _tags(record)


def _tags(record: bytes) -> dict[bytes, bytes] | None:
    try:
        tags = dkim.util.parse_tag_value(record)
    except dkim.util.InvalidTagValueList:
        return None
    return {k: re.sub(rb"\s+", b"", v) for k, v in tags.items()}


_cached_tags = lru_cache(maxsize=KEYS_KEPT)(_tags)


def _text(value: bytes) -> str:
    return value.decode("ascii", "replace")


def _list(value: bytes) -> list[bytes]:
    return [x.strip().lower() for x in value.split(b":")]


def refusal(fields: dict[bytes, bytes], record: bytes) -> str:
    """Why the signature with tags `fields` must fail with key record `record`; "" when
    nothing here forbids it (dkimpy then verifies it)."""
    algorithm = re.sub(rb"\s+", b"", fields.get(b"a", b"")).lower()
    if algorithm == b"rsa-sha1":
        return "rsa-sha1 signatures are not accepted (RFC 8301 3.1)"
    if b"from" not in _list(fields.get(b"h", b"")):
        return "the From field is not signed (RFC 6376 5.4)"
    key = _key_tags(record)
    if key is None:
        return ""
    kind, _, digest = algorithm.partition(b"-")
    key_kind = key.get(b"k", b"rsa").lower()
    if key_kind != kind:
        return f"key k={_text(key_kind)} does not sign a={_text(algorithm)}"
    if b"h" in key and digest not in _list(key[b"h"]):
        return f"key h={_text(key[b'h'])} does not allow {_text(digest)}"
    identity = fields.get(b"i")
    if b"s" in _list(key.get(b"t", b"")) and identity is not None:
        domain = re.sub(rb"\s+", b"", identity).rpartition(b"@")[2].lower()
        if domain != re.sub(rb"\s+", b"", fields.get(b"d", b"")).lower():
            return "key t=s: i= may not be in a subdomain of d="
    if kind == b"rsa":
        return _rsa_refusal(key.get(b"p", b""), fields.get(b"b", b""))
    return ""


def unacceptable(fields: dict[bytes, bytes], header_fields: int, body: bytes) -> str:
    """Why the signature with tags `fields`, on a message of `header_fields` header fields
    and body `body`, gets dkim=policy without being verified; "" when nothing here refuses it.
    Checked before any key or RSA work, so it costs a count and, with l=, one body pass."""
    names = fields.get(b"h", b"").count(b":") + 1
    if names > MAX_SIGNED_NAMES:
        return f"h= lists {names} header fields, over {MAX_SIGNED_NAMES}"
    if names * header_fields > MAX_HEADER_WORK:
        return f"h= lists {names} header fields over {header_fields}: too much work"
    return _length_refusal(fields, body)


def _length_refusal(fields: dict[bytes, bytes], body: bytes) -> str:
    length = re.sub(rb"\s+", b"", fields.get(b"l", b""))
    if not length.isdigit() or len(length) > 76:
        return ""  # no l=, or one dkimpy fails itself
    try:
        canon = CanonicalizationPolicy.from_c_value(
            re.sub(rb"\s+", b"", fields.get(b"c", b"simple/simple"))
        )
    except InvalidCanonicalizationPolicyError:
        return ""  # dkimpy fails it
    size = len(canon.canonicalize_body(body))
    if int(length) != size:
        return f"l={int(length)} but the body is {size} octets (RFC 6376 8.2)"
    return ""


def _rsa_numbers(p: bytes) -> tuple[int, int] | None:
    """(modulus, public exponent) of the key p=; None when dkimpy cannot read it (it fails it).
    Cached when short."""
    return _cached_numbers(p) if len(p) <= CACHED_RECORD else _numbers(p)


def _numbers(p: bytes) -> tuple[int, int] | None:
    try:
        key = parse_public_key(base64.b64decode(p))
        return int(key["modulus"]), int(key["publicExponent"])
    except (binascii.Error, UnparsableKeyError, KeyError, TypeError, ValueError):
        return None


_cached_numbers = lru_cache(maxsize=KEYS_KEPT)(_numbers)


def _rsa_refusal(p: bytes, b: bytes) -> str:
    numbers = _rsa_numbers(p)
    try:
        signature = base64.b64decode(re.sub(rb"\s+", b"", b))
    except (binascii.Error, ValueError):
        return ""  # a signature dkimpy cannot read: it fails it
    if numbers is None:
        return ""
    modulus, exponent = numbers
    bits = modulus.bit_length()
    if bits < MIN_RSA_BITS:
        return f"RSA key of {bits} bits, under {MIN_RSA_BITS} (RFC 8301 3.2)"
    if bits > MAX_RSA_BITS:
        return f"RSA key of {bits} bits, over {MAX_RSA_BITS}"
    if exponent.bit_length() > MAX_RSA_EXPONENT_BITS:
        return f"RSA public exponent of {exponent.bit_length()} bits, over {MAX_RSA_EXPONENT_BITS}"
    length = (bits + 7) // 8
    if len(signature) != length or int.from_bytes(signature, "big") >= modulus:
        return "RSA signature not of the modulus' length or not below the modulus (RFC 8017)"
    return ""
