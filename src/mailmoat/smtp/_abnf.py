"""RFC 5321 / RFC 6531 grammar as compiled patterns (the way h11 keeps HTTP's in `_abnf.py`).

Patterns work on `str`; the engine decodes a command line as ASCII, or as UTF-8 when SMTPUTF8
is in force, before matching. Lengths are checked by the caller, not here.
"""

from __future__ import annotations

import re
import unicodedata

# RFC 5322 atext, and its RFC 6531 extension with any non-ASCII character.
_ATEXT = r"A-Za-z0-9!#$%&'*+\-/=?^_`{|}~"
_UTF8_NONASCII = r"\u0080-\U0010ffff"

ATOM = rf"[{_ATEXT}]+"
ATOM_UTF8 = rf"[{_ATEXT}{_UTF8_NONASCII}]+"
DOT_STRING = rf"{ATOM}(?:\.{ATOM})*"
DOT_STRING_UTF8 = rf"{ATOM_UTF8}(?:\.{ATOM_UTF8})*"
# Quoted-string: qtextSMTP is %d32-33 / %d35-91 / %d93-126; quoted-pairSMTP is "\" %d32-126.
QUOTED_STRING = r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"'
QUOTED_STRING_UTF8 = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8_NONASCII}]|\\[\x20-\x7e])*"'

LET_DIG = r"[A-Za-z0-9]"
SUB_DOMAIN = rf"{LET_DIG}(?:[A-Za-z0-9-]*{LET_DIG})?"
_LDU = rf"A-Za-z0-9{_UTF8_NONASCII}"
SUB_DOMAIN_UTF8 = rf"[{_LDU}](?:[{_LDU}-]*[{_LDU}])?"
DOMAIN = rf"{SUB_DOMAIN}(?:\.{SUB_DOMAIN})*"
DOMAIN_UTF8 = rf"{SUB_DOMAIN_UTF8}(?:\.{SUB_DOMAIN_UTF8})*"
# Address literals are checked for real (ipaddress) after this loose match.
ADDRESS_LITERAL = r"\[[A-Za-z0-9.:\-]+\]"

HELO_AS_SENT = re.compile(rf"(?:{DOMAIN})\.?|{ADDRESS_LITERAL}")
"""A HELO name that can stand in a Received: `from` clause as it is (RFC 5321 4.4): a domain
(a final dot allowed) or an address literal."""

ESMTP_KEYWORD = r"[A-Za-z0-9][A-Za-z0-9-]*"
ESMTP_VALUE = r"[\x21-\x3c\x3e-\x7e]+"

esmtp_param = re.compile(rf"({ESMTP_KEYWORD})(?:=({ESMTP_VALUE}))?")


def _mailbox(utf8: bool) -> re.Pattern[str]:
    local = f"{DOT_STRING_UTF8}|{QUOTED_STRING_UTF8}" if utf8 else f"{DOT_STRING}|{QUOTED_STRING}"
    domain = DOMAIN_UTF8 if utf8 else DOMAIN
    # A-d-l (source route) is accepted for RFC compliance and then ignored (RFC 5321 §4.1.1.3).
    adl = rf"@(?:{domain}|{ADDRESS_LITERAL})(?:,@(?:{domain}|{ADDRESS_LITERAL}))*:"
    return re.compile(rf"<(?:{adl})?(?P<local>{local})@(?P<domain>{domain}|{ADDRESS_LITERAL})>")


path = _mailbox(utf8=False)
path_utf8 = _mailbox(utf8=True)


def routing_local_part(local: str) -> bool:
    """Sender-specified routing in a local part: `user%host`, `host!user`, `"user@host"`.

    RFC 5321 §3.6 leaves these to the receiving host, and a server inside that trusts the
    gateway (Postfix: allow_percent_hack, swap_bangpath) rewrites them and relays elsewhere.
    Works on the local part as sent, quotes and backslashes included: an escaped `\\@` still
    has its `@`. A `:` (DECnet's `host::user`, which Sendmail routes) counts too, and so do
    their compatibility forms (full-width U+FF05, U+FF20, U+FF01, U+FF1A, the small forms), which
    a downstream that normalises Unicode (NFKC) would turn into the ASCII ones.
    """
    if not local.isascii():
        local = unicodedata.normalize("NFKC", local)
    return "%" in local or "!" in local or "@" in local or ":" in local


def printable_address(text: str) -> bool:
    """No control, format, separator, private-use or unassigned code point (Unicode Cc, Cf,
    Zl, Zp, Zs but the ASCII space, Cs, Co, Cn): U+0085, U+2028 or a bidi control copied into
    Return-Path, Delivered-To or Received: would end or disguise a header line."""
    return text.isascii() or text.isprintable()


def ascii_lower(text: str) -> str:
    """Lower-case A-Z only. `str.lower()` also folds non-ASCII letters onto ASCII ones (KELVIN
    SIGN to `k`), which would let a domain that is not ours compare equal to one that is."""
    return text.translate(_ASCII_LOWER) if not text.isascii() else text.lower()


_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")

# First line of a protocol that is not SMTP: HTTP request lines, header lines, proxies.
non_smtp_verbs = frozenset(
    {"GET", "POST", "PUT", "HEAD", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "USER", "PASS"}
)
TLS_RECORD_PREFIXES = (b"\x16\x03", b"\x80")  # TLS handshake record, SSLv2 ClientHello
