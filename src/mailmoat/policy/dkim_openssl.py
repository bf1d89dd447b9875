"""dkimpy's RSA arithmetic done by OpenSSL (the `cryptography` package), same answers.

dkimpy 1.1.8 verifies an RSA signature in pure Python: the 2048-bit `pow`, the conversion of
numbers to octets one octet at a time, and the parse of the key record's ASN.1 for each
message. That is about 0.7 ms of CPU per signature, more than all the rest of a DKIM
verification (a third of the milter's CPU per message). `install()` replaces the two functions
dkimpy's verifier looks up in its own module namespace:

* `RSASSA_PKCS1_v1_5_verify(hash, signature, key)`: the RSASSA-PKCS1-v1_5 check (RFC 8017
  8.2.2) by OpenSSL, for the keys mailmoat verifies (`dkim_rules` refuses the rest first:
  1024 to 8192 bits, an exponent of at most 64 bits, a signature exactly as long as the
  modulus and below it); anything else goes to dkimpy's own function, so the answer (True,
  False, or dkimpy's exception) is the same for every input;
* `parse_public_key(der)`: dkimpy's own parse, remembered for the few keys that sign most
  mail (`DKIM_KEYS_KEPT`), a copy returned each time.

Signing is not touched (dkimpy signs with its own private-key functions).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import dkim
import dkim.crypto
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from mailmoat.limits import DKIM_KEYS_KEPT, MAX_RSA_BITS, MAX_RSA_EXPONENT_BITS
from mailmoat.policy.dkim_rules import MIN_RSA_BITS

_PYTHON_VERIFY = dkim.crypto.RSASSA_PKCS1_v1_5_verify
_PYTHON_PARSE = dkim.crypto.parse_public_key
_HASHES: dict[str, hashes.HashAlgorithm] = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}


@lru_cache(maxsize=DKIM_KEYS_KEPT)
def _openssl_key(modulus: int, exponent: int) -> rsa.RSAPublicKey | None:
    """The key as OpenSSL holds it; None when OpenSSL will not take it (dkimpy answers)."""
    try:
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    except (ValueError, UnsupportedAlgorithm):
        return None


def _openssl_case(
    hash: Any, signature: bytes, modulus: int, exponent: int
) -> tuple[rsa.RSAPublicKey, hashes.HashAlgorithm] | None:
    """The key and hash when OpenSSL answers as dkimpy would; None to leave it to dkimpy."""
    algorithm = _HASHES.get(str(getattr(hash, "name", "")).lower())
    bits = modulus.bit_length()
    if (
        algorithm is None
        or not MIN_RSA_BITS <= bits <= MAX_RSA_BITS
        or not 0 < exponent.bit_length() <= MAX_RSA_EXPONENT_BITS
        or len(signature) != (bits + 7) // 8
        or int.from_bytes(signature, "big") >= modulus
    ):
        return None  # dkimpy's leniencies (a number, not octets) and limits stay its own
    key = _openssl_key(modulus, exponent)
    return None if key is None else (key, algorithm)


def rsassa_pkcs1_v1_5_verify(hash: Any, signature: bytes, public_key: dict[str, int]) -> bool:
    """dkimpy's `RSASSA_PKCS1_v1_5_verify`, the arithmetic in OpenSSL where it applies."""
    case = _openssl_case(hash, signature, public_key["modulus"], public_key["publicExponent"])
    if case is not None:
        key, algorithm = case
        try:
            key.verify(signature, hash.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))
            return True
        except InvalidSignature:
            return False
        except UnsupportedAlgorithm:
            pass  # an OpenSSL built without SHA-1 signatures: dkimpy answers
    return bool(_PYTHON_VERIFY(hash, signature, public_key))


@lru_cache(maxsize=DKIM_KEYS_KEPT)
def _parsed(der: bytes) -> tuple[tuple[str, int], ...]:
    return tuple(_PYTHON_PARSE(der).items())


def parse_public_key(der: bytes) -> dict[str, int]:
    """dkimpy's `parse_public_key`, each distinct key parsed once (errors are not kept)."""
    return dict(_parsed(bytes(der)))


def install() -> None:
    """Make dkimpy's verifier use these (idempotent; the names its module looks up)."""
    dkim.RSASSA_PKCS1_v1_5_verify = rsassa_pkcs1_v1_5_verify
    dkim.parse_public_key = parse_public_key
