"""The test world that the private dnsmasq serves: client addresses on 127.0.0.0/8 with and
without reverse DNS, sender domains with SPF, DKIM keys and DMARC policies, a block list and an
allow list. Nothing here exists on the Internet (.test is reserved, RFC 2606)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from functools import cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

GOOD_IP = "127.0.0.2"
"""mail.sender.test: PTR and A agree (FCrDNS pass); the MX of sender.test."""
LIAR_IP = "127.0.0.3"
"""PTR liar.sender.test, a name with no address (FCrDNS fail)."""
NOPTR_IP = "127.0.0.4"
"""No PTR at all."""
LISTED_IP = "127.0.0.5"
"""listed.sender.test (FCrDNS pass), on bl.test (127.0.0.2) and bl2.test (127.0.0.3)."""
ALLOWED_IP = "127.0.0.6"
"""No PTR, but on the allow list wl.test."""
MISMATCH_IP = "127.0.0.7"
"""PTR other.sender.test, which resolves to 127.0.0.8 (FCrDNS fail)."""

GOOD_HELO = "mail.sender.test"
SELECTOR = "sel"
OUR_HOSTNAME = "mx.mailmoat.test"


@dataclass(frozen=True)
class Keys:
    private_pem: bytes
    public_b64: str


@cache
def dkim_keys(bits: int = 2048) -> Keys:
    """One RSA key for the session (2048 bits: the TXT record needs two strings)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Keys(private, base64.b64encode(public).decode())


def records() -> list[str]:
    """dnsmasq option lines for the test world."""
    key = dkim_keys().public_b64
    return [
        # clients
        f"host-record=mail.sender.test,{GOOD_IP}",
        f"host-record=listed.sender.test,{LISTED_IP}",
        "ptr-record=3.0.0.127.in-addr.arpa,liar.sender.test",
        "ptr-record=7.0.0.127.in-addr.arpa,other.sender.test",
        "host-record=other.sender.test,127.0.0.8",
        "cname=alias.sender.test,mail.sender.test",
        # sender.test: MX-based SPF with an include, DMARC reject (quarantine for subdomains)
        "mx-host=sender.test,mail.sender.test,10",
        'txt-record=sender.test,"v=spf1 mx include:_spf.sender.test -all"',
        'txt-record=_spf.sender.test,"v=spf1 ip4:127.0.0.9 -all"',
        'txt-record=mail.sender.test,"v=spf1 a -all"',
        'txt-record=_dmarc.sender.test,"v=DMARC1; p=reject; sp=quarantine"',
        f'txt-record={SELECTOR}._domainkey.sender.test,"v=DKIM1; k=rsa; p={key}"',
        # soft.test: SPF softfail, DMARC quarantine
        'txt-record=soft.test,"v=spf1 ~all"',
        'txt-record=_dmarc.soft.test,"v=DMARC1; p=quarantine"',
        # none.test: no SPF, DMARC p=none
        'txt-record=_dmarc.none.test,"v=DMARC1; p=none"',
        # strict.test: SPF pass for mail.sender.test's address, strict alignment
        'txt-record=strict.test,"v=spf1 ip4:127.0.0.2 -all"',
        'txt-record=_dmarc.strict.test,"v=DMARC1; p=reject; aspf=s; adkim=s"',
        # nodmarc.test: SPF fail, no DMARC record
        'txt-record=nodmarc.test,"v=spf1 -all"',
        # permerror.test: an SPF record with an unknown mechanism
        'txt-record=permerror.test,"v=spf1 bogus:x -all"',
        # other.test signs with its own key: a valid signature, but not aligned with sender.test
        f'txt-record={SELECTOR}._domainkey.other.test,"v=DKIM1; k=rsa; p={key}"',
        # DNS lists: bl.test and bl2.test list LISTED_IP, wl.test lists ALLOWED_IP
        "address=/5.0.0.127.bl.test/127.0.0.2",
        "address=/5.0.0.127.bl2.test/127.0.0.3",
        "address=/6.0.0.127.wl.test/127.0.0.2",
        'txt-record=5.0.0.127.bl.test,"listed for testing"',
    ]
