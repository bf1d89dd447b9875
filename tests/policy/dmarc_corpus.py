"""A DMARC corpus written from RFC 7489: each case one scenario, the section it follows, and the
result the RFC's text gives. Run by tests/policy/test_dmarc_corpus.py against the evaluator with
a table of DNS answers (no socket).

A case: the TXT records per name (`TEMP`: the lookup fails; a name not listed does not exist),
the author domain(s) from RFC5322.From, the SPF result for the MAIL FROM identity (HELO for the
null sender) with its domain, the DKIM results with their d=, and the expected (result,
policy, disposition): result pass / fail / none / temperror / permerror; policy the p or sp that
applies ("unknown" when it could not be read); disposition what it asks for this message after
pct sampling. `draw`: the sampling draw in [0, 1) (6.6.4: the message is in the sample when
draw * 100 < pct).

Points the RFC leaves open, and what we decided (dmarc_record.py says the same):

D1  `v` must be the first tag with the value `DMARC1` exactly (6.3 "MUST match precisely";
    6.4 spells DMARC1 in case-sensitive %x codes): `v=dmarc1`, `v=DMARC10` are not DMARC
    records (6.6.3 steps 2, 4 discard them; they never count as a second record). Space and
    tab are allowed around tags and `=` (6.4 *WSP), before the first tag too.
D2  Tag names and keyword values compare without case (6.4 ABNF quoted strings, RFC 5234
    2.3): `P=Reject` is `p=reject`.
D3  `p` may come anywhere after `v` (6.3 "MUST appear in that order").
D4  A tag named twice makes the record invalid (6.3 adopts DKIM's tag-value syntax, RFC 6376
    3.2), so the domain has no policy (and discovery does not go on to the parent).
D5  A tag with a syntax error (non-ASCII byte, no `=`, bad name, value outside its grammar)
    is ignored and the rest stands (6.3); adkim/aspf then `r`, pct 100 (6.3 defaults).
D6  A valid reporting URI (6.6.3 step 6.1) is `mailto:` + an address, optionally `!size`
    (6.4 dmarc-uri); other schemes do not count (6.2: mailto is the one every receiver must
    implement). Under step 6.1 the record acts as `p=none` for subdomains too; adkim, aspf
    and pct still come from the record.
D7  A public suffix used as an author domain (`co.uk`) is its own organizational domain.
    The PSL includes its private section (`github.io` users are separate organizations).
D8  A temporary error (SPF, DKIM) gives temperror only when its domain could have aligned
    and nothing else passed aligned. A policy lookup that failed is always temperror (policy
    "unknown"): even a pass for the author domain itself could be "pass" or "none".
D9  Several author domains (6.6.1): each evaluated, the strictest outcome wins; past
    MAX_AUTHOR_DOMAINS (10) distinct domains, those not evaluated count as a failure under
    reject (result permerror), never as none.
D10 An author domain compares without case and without a final dot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TEMP = "TEMP"

Dns = dict[str, tuple[bytes, ...] | str]
Expect = tuple[str, str, str]


@dataclass(frozen=True)
class Case:
    name: str
    section: str
    dns: Dns
    author: tuple[str, ...]
    spf: tuple[str, str] | None
    dkim: tuple[tuple[str, str], ...]
    expect: Expect
    draw: float = 0.0
    queried: tuple[str, ...] | None = field(default=None)
    """When set: exactly the names the evaluation must look up, in order."""


CASES: list[Case] = []

AUTHOR = "example.com"
SUB = "mail.example.com"
ATTACKER = "attacker.example"
FAILS = ("fail", ATTACKER)  # SPF for a domain that cannot align
REJECT = ("fail", "reject", "reject")
QUARANTINE = ("fail", "quarantine", "quarantine")
NONE_POLICY = ("fail", "none", "none")
NO_POLICY = ("none", "none", "none")
PASS_REJECT = ("pass", "reject", "none")


def case(
    name: str,
    section: str,
    dns: Dns,
    expect: Expect,
    *,
    author: str | tuple[str, ...] = AUTHOR,
    spf: tuple[str, str] | None = FAILS,
    dkim: tuple[tuple[str, str], ...] = (),
    draw: float = 0.0,
    queried: tuple[str, ...] | None = None,
) -> None:
    authors = (author,) if isinstance(author, str) else author
    CASES.append(Case(name, section, dns, authors, spf, dkim, expect, draw, queried))


def at(domain: str, *records: bytes) -> Dns:
    return {f"_dmarc.{domain}": records}


# --- 6.6.3 policy discovery ---------------------------------------------------------------------

S_DISC = "6.6.3"
case("record at the author domain", S_DISC, at(AUTHOR, b"v=DMARC1; p=reject"), REJECT)
case(
    "no record anywhere: no policy",
    S_DISC,
    {},
    NO_POLICY,
    queried=("_dmarc.example.com",),
)
case(
    "subdomain without a record: the organizational domain's, p when no sp",
    "6.6.3 step 3; 6.3 sp",
    at(AUTHOR, b"v=DMARC1; p=reject"),
    REJECT,
    author=SUB,
    queried=("_dmarc.mail.example.com", "_dmarc.example.com"),
)
case(
    "subdomain without a record: the organizational domain's sp",
    "6.6.3 step 3; 6.3 sp",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=quarantine"),
    QUARANTINE,
    author=SUB,
)
case(
    "subdomain: sp=none at the organizational domain",
    "6.3 sp",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=none"),
    NONE_POLICY,
    author=SUB,
)
case(
    "the organizational domain itself: p, not sp",
    "6.3 sp",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=none"),
    REJECT,
)
case(
    "deep subdomain: the organizational domain's sp",
    "6.6.3 step 3",
    at(AUTHOR, b"v=DMARC1; p=none; sp=reject"),
    REJECT,
    author="a.b.c.example.com",
    queried=("_dmarc.a.b.c.example.com", "_dmarc.example.com"),
)
case(
    "a record at the subdomain wins over the organizational domain's",
    "6.6.3 steps 1-3",
    {**at(SUB, b"v=DMARC1; p=none"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NONE_POLICY,
    author=SUB,
    queried=("_dmarc.mail.example.com",),
)
case(
    "sp in a subdomain's own record does not apply to that subdomain",
    "6.3 sp",
    {**at(SUB, b"v=DMARC1; p=quarantine; sp=reject"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    QUARANTINE,
    author=SUB,
)
case(
    "an intermediate domain's record is never looked at",
    "6.6.3 step 3",
    {**at("b.example.com", b"v=DMARC1; p=reject")},
    NO_POLICY,
    author="a.b.example.com",
    queried=("_dmarc.a.b.example.com", "_dmarc.example.com"),
)
case(
    "an intermediate domain's record is skipped for the organizational domain's",
    "6.6.3 step 3",
    {**at("b.example.com", b"v=DMARC1; p=none"), **at(AUTHOR, b"v=DMARC1; p=quarantine")},
    QUARANTINE,
    author="a.b.example.com",
)
case(
    "two DMARC records at the author domain: no policy, no fall-back",
    "6.6.3 step 5",
    {**at(SUB, b"v=DMARC1; p=reject", b"v=DMARC1; p=none"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NO_POLICY,
    author=SUB,
    queried=("_dmarc.mail.example.com",),
)
case(
    "two identical DMARC records: still two",
    "6.6.3 step 5",
    at(AUTHOR, b"v=DMARC1; p=reject", b"v=DMARC1; p=reject"),
    NO_POLICY,
)
case(
    "two DMARC records at the organizational domain: no policy",
    "6.6.3 step 5",
    at(AUTHOR, b"v=DMARC1; p=reject", b"v=DMARC1; p=quarantine"),
    NO_POLICY,
    author=SUB,
)
case(
    "v=DMARC10 beside a real record is not a second DMARC record",
    "6.6.3 step 2; 6.3 v",
    at(AUTHOR, b"v=DMARC10; p=none", b"v=DMARC1; p=reject"),
    REJECT,
)
case(
    "v=dmarc1 beside a real record is not a second DMARC record",
    "6.6.3 step 2; 6.4 dmarc-version",
    at(AUTHOR, b"v=dmarc1; p=none", b"v=DMARC1; p=reject"),
    REJECT,
)
case(
    "an SPF record and other TXT beside the DMARC record",
    "6.6.3 step 2",
    at(AUTHOR, b"v=spf1 -all", b"google-site-verification=abc", b"v=DMARC1; p=reject"),
    REJECT,
)
case(
    "only non-DMARC TXT at the author domain: the organizational domain's",
    "6.6.3 steps 2-3",
    {**at(SUB, b"v=spf1 -all", b"v=DMARC10; p=none"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    REJECT,
    author=SUB,
    queried=("_dmarc.mail.example.com", "_dmarc.example.com"),
)
case(
    "v=dmarc1 (wrong case) at the subdomain is discarded: the organizational domain's",
    "6.6.3 steps 2-3; 6.3 v",
    {**at(SUB, b"v=dmarc1; p=none"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    REJECT,
    author=SUB,
)
case(
    "an invalid record (bad p, no rua) at the subdomain: no policy, not the parent's",
    "6.6.3 step 6.2",
    {**at(SUB, b"v=DMARC1; p=bogus"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NO_POLICY,
    author=SUB,
    queried=("_dmarc.mail.example.com",),
)
case(
    "a record without p at the subdomain: no policy, not the parent's",
    "6.6.3 step 6.2",
    {**at(SUB, b"v=DMARC1"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NO_POLICY,
    author=SUB,
)
case(
    "an invalid sp at the subdomain's own record: no policy, not the parent's",
    "6.6.3 step 6.2",
    {**at(SUB, b"v=DMARC1; p=reject; sp=bogus"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NO_POLICY,
    author=SUB,
)
case(
    "a duplicated tag at the subdomain: no policy, not the parent's",
    "6.6.3; 6.3 (RFC 6376 3.2)",
    {**at(SUB, b"v=DMARC1; p=none; p=none"), **at(AUTHOR, b"v=DMARC1; p=reject")},
    NO_POLICY,
    author=SUB,
)
case(
    "invalid p with a valid rua at the subdomain: p=none there",
    "6.6.3 step 6.1",
    {
        **at(SUB, b"v=DMARC1; p=bogus; rua=mailto:d@example.com"),
        **at(AUTHOR, b"v=DMARC1; p=reject"),
    },
    NONE_POLICY,
    author=SUB,
)
case(
    "the author domain's lookup fails: temperror, policy unknown",
    "6.6.3 (DNS errors: receiver's choice)",
    {"_dmarc.example.com": TEMP},
    ("temperror", "unknown", "none"),
)
case(
    "the organizational domain's lookup fails: temperror",
    "6.6.3",
    {"_dmarc.mail.example.com": (), "_dmarc.example.com": TEMP},
    ("temperror", "unknown", "none"),
    author=SUB,
)
case(
    "a record at the author domain: the organizational domain's failing lookup never made",
    "6.6.3 step 3",
    {**at(SUB, b"v=DMARC1; p=quarantine"), "_dmarc.example.com": TEMP},
    QUARANTINE,
    author=SUB,
    queried=("_dmarc.mail.example.com",),
)
case(
    "policy lookup fails, SPF passed for the author domain itself: still temperror",
    "6.6.3; 6.6.2 (D8: the result could be pass or none)",
    {"_dmarc.example.com": TEMP},
    ("temperror", "unknown", "none"),
    spf=("pass", AUTHOR),
)
case(
    "policy lookup fails, DKIM passed for the author domain itself: still temperror",
    "6.6.3; 6.6.2 (D8)",
    {"_dmarc.example.com": TEMP},
    ("temperror", "unknown", "none"),
    dkim=(("pass", AUTHOR),),
)
case(
    "policy lookup fails, SPF passed for a subdomain: temperror",
    "6.6.3; 3.1.2 (D8)",
    {"_dmarc.example.com": TEMP},
    ("temperror", "unknown", "none"),
    spf=("pass", SUB),
)
case(
    "the author domain is the organizational domain: one lookup",
    "6.6.3 step 3 (if different)",
    {},
    NO_POLICY,
    queried=("_dmarc.example.com",),
)
case(
    "author domain in upper case with a final dot",
    "6.6.3 (D10)",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=none"),
    REJECT,
    author="Example.COM.",
    queried=("_dmarc.example.com",),
)
case(
    "a public suffix as the author domain: its own record (D7)",
    "3.2; 6.6.1 (public suffixes are not exempt)",
    at("co.uk", b"v=DMARC1; p=reject"),
    REJECT,
    author="co.uk",
    queried=("_dmarc.co.uk",),
)
case(
    "a subdomain under a two-label public suffix: the registered domain's record",
    "3.2; 6.6.3 step 3",
    at("example.co.uk", b"v=DMARC1; p=reject; sp=quarantine"),
    QUARANTINE,
    author="mail.example.co.uk",
    queried=("_dmarc.mail.example.co.uk", "_dmarc.example.co.uk"),
)
case(
    "a registered domain under a public suffix: never the suffix's record",
    "3.2; 6.6.3 step 3",
    at("co.uk", b"v=DMARC1; p=reject"),
    NO_POLICY,
    author="example.co.uk",
    queried=("_dmarc.example.co.uk",),
)
case(
    "wildcard rule *.ck: foo.bar.ck is an organizational domain",
    "3.2 (PSL wildcard)",
    at("foo.bar.ck", b"v=DMARC1; p=reject; sp=quarantine"),
    QUARANTINE,
    author="x.foo.bar.ck",
    queried=("_dmarc.x.foo.bar.ck", "_dmarc.foo.bar.ck"),
)
case(
    "exception rule !www.ck: www.ck is an organizational domain",
    "3.2 (PSL exception)",
    at("www.ck", b"v=DMARC1; p=none; sp=reject"),
    REJECT,
    author="mail.www.ck",
    queried=("_dmarc.mail.www.ck", "_dmarc.www.ck"),
)
case(
    "exception rule !city.kawasaki.jp under *.kawasaki.jp",
    "3.2 (PSL exception)",
    at("city.kawasaki.jp", b"v=DMARC1; p=quarantine"),
    QUARANTINE,
    author="a.city.kawasaki.jp",
    queried=("_dmarc.a.city.kawasaki.jp", "_dmarc.city.kawasaki.jp"),
)
case(
    "PSL private section: a github.io user is its own organization (D7)",
    "3.2",
    at("github.io", b"v=DMARC1; p=reject"),
    NO_POLICY,
    author="alice.github.io",
    queried=("_dmarc.alice.github.io",),
)
case(
    "a TLD unknown to the PSL: the default rule * (last label is the suffix)",
    "3.2",
    at("sender.test", b"v=DMARC1; p=none; sp=reject"),
    REJECT,
    author="a.b.sender.test",
    queried=("_dmarc.a.b.sender.test", "_dmarc.sender.test"),
)

# --- 6.3 / 6.4 the record: version tag, separators, case, whitespace -----------------------------

DISCARDED: Expect = ("discarded", "", "")
"""Not a DMARC record (6.6.3 step 2): no policy at the author domain, the parent's applies."""

RECORD_SYNTAX: list[tuple[str, bytes, Expect, str]] = [
    ("plain", b"v=DMARC1; p=reject", REJECT, "6.3"),
    ("no space after ;", b"v=DMARC1;p=reject", REJECT, "6.4 dmarc-sep"),
    ("spaces around = and ;", b"v = DMARC1 ; p = reject", REJECT, "6.4 *WSP"),
    ("tabs around ;", b"v=DMARC1\t;\tp=reject", REJECT, "6.4 *WSP"),
    ("trailing ;", b"v=DMARC1; p=reject;", REJECT, "6.4 [dmarc-sep]"),
    ("trailing ; and space", b"v=DMARC1; p=reject; ", REJECT, "6.4 [dmarc-sep]"),
    ("trailing space", b"v=DMARC1; p=reject ", REJECT, "6.4 *WSP"),
    ("empty tag between ;;", b"v=DMARC1;; p=reject", REJECT, "6.3 syntax errors ignored (D5)"),
    ("leading space (D1)", b" v=DMARC1; p=reject", REJECT, "6.3; RFC 6376 3.2 [FWS]"),
    ("V upper case (D2)", b"V=DMARC1; p=reject", REJECT, "6.4; RFC 5234 2.3"),
    ("P upper case (D2)", b"v=DMARC1; P=reject", REJECT, "6.4; RFC 5234 2.3"),
    ("p=REJECT (D2)", b"v=DMARC1; p=REJECT", REJECT, "6.4; RFC 5234 2.3"),
    ("p=Quarantine (D2)", b"v=DMARC1; p=Quarantine", QUARANTINE, "6.4; RFC 5234 2.3"),
    ("p=NONE", b"v=DMARC1; p=NONE", NONE_POLICY, "6.4; RFC 5234 2.3"),
    ("p after rua (D3)", b"v=DMARC1; rua=mailto:d@example.com; p=reject", REJECT, "6.3"),
    ("p last of many (D3)", b"v=DMARC1; adkim=r; aspf=r; pct=100; p=quarantine", QUARANTINE, "6.3"),
    (
        "all tags",
        b"v=DMARC1; p=reject; sp=none; adkim=s; aspf=s; pct=100; fo=1; rf=afrf; "
        b"ri=86400; rua=mailto:a@example.com; ruf=mailto:f@example.com",
        REJECT,
        "6.3",
    ),
    ("unknown tag ignored", b"v=DMARC1; p=reject; foo=bar", REJECT, "6.3 unknown tags ignored"),
    ("unknown tag first after v", b"v=DMARC1; np=none; p=reject", REJECT, "6.3"),
    ("unknown tag with odd value", b"v=DMARC1; p=reject; x=a=b", REJECT, "6.3"),
    ("tag without =", b"v=DMARC1; p=reject; garbage", REJECT, "6.3 (D5)"),
    ("nameless tag", b"v=DMARC1; p=reject; =x", REJECT, "6.3 (D5)"),
    ("bad tag name", b"v=DMARC1; p=reject; 1x=2", REJECT, "6.3 (D5); RFC 6376 3.2"),
    ("tag name with a hyphen", b"v=DMARC1; p=reject; x-y=1", REJECT, "6.3 (D5)"),
    ("fo, rf, ri with bad values", b"v=DMARC1; p=reject; fo=9; rf=; ri=x", REJECT, "6.3 (D5)"),
    ("ruf invalid", b"v=DMARC1; p=reject; ruf=nonsense", REJECT, "6.3 (D5)"),
    ("rua invalid", b"v=DMARC1; p=reject; rua=nonsense", REJECT, "6.3 (D5)"),
    # not DMARC records: discarded (6.6.3 step 2), so no policy
    ("v=DMARC10", b"v=DMARC10; p=reject", DISCARDED, "6.3 v; 6.6.3 step 2 (D1)"),
    ("v=DMARC1x", b"v=DMARC1x; p=reject", DISCARDED, "6.3 v (D1)"),
    ("v=DMARC2", b"v=DMARC2; p=reject", DISCARDED, "6.3 v (D1)"),
    ("v=DMARC", b"v=DMARC; p=reject", DISCARDED, "6.3 v (D1)"),
    ("v=dmarc1", b"v=dmarc1; p=reject", DISCARDED, "6.4 %x44... (D1)"),
    ("v=Dmarc1", b"v=Dmarc1; p=reject", DISCARDED, "6.4 %x44... (D1)"),
    ("v= empty", b"v=; p=reject", DISCARDED, "6.3 v (D1)"),
    ("v not first", b"p=reject; v=DMARC1", DISCARDED, "6.3 v must be first"),
    ("empty tag before v", b"; v=DMARC1; p=reject", DISCARDED, "6.3 v must be first"),
    ("no separator after v", b"v=DMARC1 p=reject", DISCARDED, "6.4 dmarc-sep"),
    ("comma for ;", b"v=DMARC1, p=reject", DISCARDED, "6.4 dmarc-sep"),
    ("v=DMARC1 with a non-ASCII space", b"v=DMARC1\xc2\xa0; p=reject", DISCARDED, "6.3 v"),
    ("vv=DMARC1", b"vv=DMARC1; p=reject", DISCARDED, "6.3 v"),
    ("spf record", b"v=spf1 -all", DISCARDED, "6.6.3 step 2"),
    ("empty record", b"", DISCARDED, "6.6.3 step 2"),
    # DMARC records that give no policy (6.6.3 step 6.2) or a duplicated tag (D4)
    ("v only", b"v=DMARC1", NO_POLICY, "6.6.3 step 6.2"),
    ("v only with ;", b"v=DMARC1;", NO_POLICY, "6.6.3 step 6.2"),
    ("p empty", b"v=DMARC1; p=", NO_POLICY, "6.6.3 step 6.2"),
    ("p without =", b"v=DMARC1; p", NO_POLICY, "6.6.3 step 6.2"),
    ("p=bogus", b"v=DMARC1; p=bogus", NO_POLICY, "6.6.3 step 6.2"),
    ("p=rejected", b"v=DMARC1; p=rejected", NO_POLICY, "6.6.3 step 6.2"),
    ("p=re ject", b"v=DMARC1; p=re ject", NO_POLICY, "6.6.3 step 6.2"),
    ("p=reject,", b"v=DMARC1; p=reject,", NO_POLICY, "6.6.3 step 6.2"),
    ("p=0", b"v=DMARC1; p=0", NO_POLICY, "6.6.3 step 6.2"),
    (
        "p=reject with rua glued",
        b"v=DMARC1; p=reject rua=mailto:d@example.com",
        NO_POLICY,
        "6.6.3 step 6.2",
    ),
    ("p=quarantine/reject", b"v=DMARC1; p=quarantine/reject", NO_POLICY, "6.6.3 step 6.2"),
    ("p duplicated (D4)", b"v=DMARC1; p=reject; p=none", NO_POLICY, "6.3; RFC 6376 3.2"),
    ("p duplicated, same value (D4)", b"v=DMARC1; p=reject; p=reject", NO_POLICY, "6.3 (D4)"),
    ("p duplicated, other case (D4)", b"v=DMARC1; p=reject; P=reject", NO_POLICY, "6.3 (D4)"),
    ("v duplicated (D4)", b"v=DMARC1; p=reject; v=DMARC1", NO_POLICY, "6.3 (D4)"),
    ("sp duplicated (D4)", b"v=DMARC1; p=reject; sp=none; sp=none", NO_POLICY, "6.3 (D4)"),
    ("pct duplicated (D4)", b"v=DMARC1; p=reject; pct=100; pct=100", NO_POLICY, "6.3 (D4)"),
    ("unknown tag duplicated (D4)", b"v=DMARC1; p=reject; x=1; x=2", NO_POLICY, "6.3 (D4)"),
    # non-ASCII bytes: only that tag is ignored (D5)
    ("non-ASCII in an unknown tag", b"v=DMARC1; p=reject; x=\xff", REJECT, "6.3 (D5)"),
    ("non-ASCII tag name", b"v=DMARC1; p=reject; \xc3\xa9=1", REJECT, "6.3 (D5)"),
    (
        "non-ASCII in rua",
        b"v=DMARC1; p=reject; rua=mailto:d@b\xc3\xbccher.example",
        REJECT,
        "6.3 (D5)",
    ),
    (
        "non-ASCII in ruf",
        b"v=DMARC1; p=reject; ruf=mailto:\xe2\x82\xac@example.com",
        REJECT,
        "6.3 (D5)",
    ),
    ("non-ASCII in fo", b"v=DMARC1; fo=\xff; p=quarantine", QUARANTINE, "6.3 (D5)"),
    ("non-ASCII after the last tag", b"v=DMARC1; p=reject; \xff", REJECT, "6.3 (D5)"),
    ("latin-1 byte in an unknown tag", b"v=DMARC1; p=reject; note=caf\xe9", REJECT, "6.3 (D5)"),
    ("non-ASCII in p", b"v=DMARC1; p=r\xc3\xa9ject", NO_POLICY, "6.6.3 step 6.2 (D5)"),
    (
        "non-ASCII in p, valid rua",
        b"v=DMARC1; p=r\xc3\xa9ject; rua=mailto:d@example.com",
        NONE_POLICY,
        "6.6.3 step 6.1 (D5)",
    ),
    ("non-ASCII in sp", b"v=DMARC1; p=reject; sp=\xff", NO_POLICY, "6.6.3 step 6.2 (D5)"),
    ("non-ASCII in v", b"v=DMARC\xc3\xa91; p=reject", DISCARDED, "6.3 v (D5)"),
]
for label, record, expect, section in RECORD_SYNTAX:
    discarded = expect == DISCARDED
    case(f"record syntax: {label}", section, at(AUTHOR, record), NO_POLICY if discarded else expect)
    # the same record at a subdomain whose organizational domain says p=reject: a DMARC record
    # ends discovery there, whatever it gives; a discarded one leaves the parent's
    case(
        f"record syntax at a subdomain, parent p=reject: {label}",
        f"{section}; 6.6.3 steps 2-6",
        {**at(SUB, record), **at(AUTHOR, b"v=DMARC1; p=reject")},
        REJECT if discarded else expect,
        author=SUB,
    )

# --- 6.6.3 step 6: invalid p or sp, and rua --------------------------------------------------

VALID_RUA = [
    b"mailto:dmarc@example.com",
    b"MAILTO:dmarc@example.com",
    b"mailto:dmarc@example.com!10m",
    b"mailto:dmarc@example.com!10",
    b"mailto:dmarc@example.com!5G",
    b"mailto:dmarc+rua@reports.example.net",
    b"mailto:d%40x@example.com",
    b"mailto:dmarc@example.com?subject=report",
    b"mailto:a@example.com,mailto:b@example.net",
    b"mailto:a@example.com , mailto:b@example.net",
    b"http://example.com/report,mailto:a@example.com",
    b"nonsense, mailto:a@example.com",
    b" mailto:dmarc@example.com ",
]
INVALID_RUA = [
    b"",
    b"mailto:",
    b"mailto:@example.com",
    b"mailto:dmarc",
    b"mailto:dmarc@",
    b"dmarc@example.com",
    b"https://example.com/report",
    b"mailto:a b@example.com",
    b"mailto:dmarc@example.com!10x",
    b"mailto:dmarc@example.com!",
    b"mailto:dmarc@-bad.example",
    b"mailto:dmarc@exa_mple.com",
    b"mailto:dmarc@b\xc3\xbccher.example",
    b"mail to:dmarc@example.com",
]
for rua in VALID_RUA:
    label = rua.decode()
    case(
        f"invalid p, valid rua {label!r}: p=none",
        "6.6.3 step 6.1; 6.4 dmarc-uri (D6)",
        at(AUTHOR, b"v=DMARC1; p=bogus; rua=" + rua),
        NONE_POLICY,
    )
    case(
        f"invalid sp, valid rua {label!r}: p=none for the subdomain",
        "6.6.3 step 6.1 (D6)",
        at(AUTHOR, b"v=DMARC1; p=reject; sp=bogus; rua=" + rua),
        NONE_POLICY,
        author=SUB,
    )
for rua in INVALID_RUA:
    label = rua.decode("ascii", "backslashreplace")
    case(
        f"invalid p, invalid rua {label!r}: no policy",
        "6.6.3 step 6.2; 6.4 dmarc-uri (D6)",
        at(AUTHOR, b"v=DMARC1; p=bogus; rua=" + rua),
        NO_POLICY,
    )
    case(
        f"invalid sp, invalid rua {label!r}: no policy, p not applied",
        "6.6.3 step 6.2 (D6)",
        at(AUTHOR, b"v=DMARC1; p=reject; sp=bogus; rua=" + rua),
        NO_POLICY,
    )
case(
    "invalid sp, no rua: no policy even for the organizational domain itself",
    "6.6.3 step 6.2",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=rejectt"),
    NO_POLICY,
)
case(
    "invalid sp, no rua, subdomain: no policy",
    "6.6.3 step 6.2",
    at(AUTHOR, b"v=DMARC1; p=reject; sp=bogus"),
    NO_POLICY,
    author=SUB,
)
case(
    "empty sp: invalid",
    "6.6.3 step 6.2",
    at(AUTHOR, b"v=DMARC1; p=reject; sp="),
    NO_POLICY,
)
case(
    "missing p with valid rua: p=none",
    "6.6.3 step 6.1",
    at(AUTHOR, b"v=DMARC1; rua=mailto:d@example.com"),
    NONE_POLICY,
)
case(
    "invalid p with rua: alignment still judged (pass under p=none)",
    "6.6.3 step 6.1 (D6)",
    at(AUTHOR, b"v=DMARC1; p=bogus; rua=mailto:d@example.com"),
    ("pass", "none", "none"),
    spf=("pass", AUTHOR),
)
case(
    "invalid p with rua: strict aspf kept from the record (D6)",
    "6.6.3 step 6.1; 6.3 aspf",
    at(AUTHOR, b"v=DMARC1; p=bogus; aspf=s; rua=mailto:d@example.com"),
    NONE_POLICY,
    spf=("pass", SUB),
)
case(
    "invalid p, rua only in ruf: no policy",
    "6.6.3 step 6.2",
    at(AUTHOR, b"v=DMARC1; p=bogus; ruf=mailto:d@example.com"),
    NO_POLICY,
)
case(
    "invalid p at the organizational domain, no rua: subdomain gets no policy",
    "6.6.3 step 6.2",
    at(AUTHOR, b"v=DMARC1; p=bogus; sp=reject"),
    NO_POLICY,
    author=SUB,
)
case(
    "invalid p with rua at the organizational domain: none also for subdomains (sp ignored)",
    "6.6.3 step 6.1 (D6)",
    at(AUTHOR, b"v=DMARC1; p=bogus; sp=reject; rua=mailto:d@example.com"),
    NONE_POLICY,
    author=SUB,
)

# --- 6.3 pct, 6.6.4 sampling --------------------------------------------------------------------

PCT: list[tuple[bytes, float, str]] = [
    # (pct tag, draw, disposition under p=reject)
    (b"pct=100", 0.99, "reject"),
    (b"pct=50", 0.49, "reject"),
    (b"pct=50", 0.50, "quarantine"),
    (b"pct=50", 0.99, "quarantine"),
    (b"pct=1", 0.0, "reject"),
    (b"pct=1", 0.01, "quarantine"),
    (b"pct=0", 0.0, "quarantine"),
    (b"pct=0", 0.5, "quarantine"),
    (b"pct=99", 0.985, "reject"),
    (b"pct=99", 0.995, "quarantine"),
    (b"pct=050", 0.6, "quarantine"),
    (b"pct=050", 0.4, "reject"),
    (b"pct = 50", 0.6, "quarantine"),
    (b"pct=000", 0.0, "quarantine"),
    # invalid or out of range: the default, 100 (6.3; D5)
    (b"pct=-1", 0.99, "reject"),
    (b"pct=-50", 0.99, "reject"),
    (b"pct=101", 0.99, "reject"),
    (b"pct=150", 0.99, "reject"),
    (b"pct=1000", 0.99, "reject"),
    (b"pct=0050", 0.99, "reject"),
    (b"pct=+50", 0.99, "reject"),
    (b"pct=50.5", 0.99, "reject"),
    (b"pct=50%", 0.99, "reject"),
    (b"pct=5 0", 0.99, "reject"),
    (b"pct=", 0.99, "reject"),
    (b"pct=abc", 0.99, "reject"),
    (b"pct=0x10", 0.99, "reject"),
    (b"pct=\xd9\xa5\xd9\xa0", 0.99, "reject"),  # Arabic-Indic digits: non-ASCII
    (b"pct=1_0", 0.99, "reject"),
]
for tag, draw, disposition in PCT:
    label = tag.decode("ascii", "backslashreplace")
    case(
        f"pct: {label}, draw {draw}",
        "6.3 pct; 6.6.4",
        at(AUTHOR, b"v=DMARC1; p=reject; " + tag),
        ("fail", "reject", disposition),
        draw=draw,
    )
case(
    "pct=0 under quarantine: none",
    "6.6.4",
    at(AUTHOR, b"v=DMARC1; p=quarantine; pct=0"),
    ("fail", "quarantine", "none"),
    draw=0.3,
)
case(
    "pct=0 under none: none",
    "6.6.4",
    at(AUTHOR, b"v=DMARC1; p=none; pct=0"),
    NONE_POLICY,
    draw=0.3,
)
case(
    "pct=50 with sp: the sampled subdomain policy is lowered",
    "6.6.4",
    at(AUTHOR, b"v=DMARC1; p=none; sp=reject; pct=50"),
    ("fail", "reject", "quarantine"),
    author=SUB,
    draw=0.7,
)
case(
    "pct does not touch a pass",
    "6.6.4",
    at(AUTHOR, b"v=DMARC1; p=reject; pct=0"),
    PASS_REJECT,
    spf=("pass", AUTHOR),
    draw=0.7,
)

# --- 3.1 identifier alignment -------------------------------------------------------------------

# (author domain, authenticated domain, aligned relaxed, aligned strict)
ALIGNMENT: list[tuple[str, str, bool, bool]] = [
    ("example.com", "example.com", True, True),
    ("example.com", "mail.example.com", True, False),
    ("mail.example.com", "example.com", True, False),
    ("a.example.com", "b.example.com", True, False),
    ("a.b.example.com", "c.example.com", True, False),
    ("example.com", "EXAMPLE.COM", True, True),
    ("example.com", "example.com.", True, True),
    ("example.com", "example.net", False, False),
    ("example.com", "notexample.com", False, False),
    ("example.com", "example.com.attacker.example", False, False),
    ("example.com", "com", False, False),
    ("example.co.uk", "example.co.uk", True, True),
    ("example.co.uk", "mail.example.co.uk", True, False),
    ("mail.example.co.uk", "bounce.example.co.uk", True, False),
    ("a.co.uk", "b.co.uk", False, False),
    ("example.co.uk", "co.uk", False, False),
    ("co.uk", "co.uk", True, True),
    ("example.com.au", "mail.example.com.au", True, False),
    ("foo.bar.ck", "x.foo.bar.ck", True, False),
    ("foo.bar.ck", "foo.baz.ck", False, False),
    ("a.bar.ck", "b.bar.ck", False, False),
    ("www.ck", "mail.www.ck", True, False),
    ("a.www.ck", "b.www.ck", True, False),
    ("a.city.kawasaki.jp", "b.city.kawasaki.jp", True, False),
    ("x.foo.kawasaki.jp", "y.foo.kawasaki.jp", False, False),
    ("alice.github.io", "bob.github.io", False, False),
    ("alice.github.io", "www.alice.github.io", True, False),
    ("sender.test", "mail.sender.test", True, False),
    ("a.example.pvt.k12.ma.us", "b.example.pvt.k12.ma.us", True, False),
]
for author, identity, relaxed, strict in ALIGNMENT:
    for mode, ok in (("r", relaxed), ("s", strict)):
        record = at(
            author, b"v=DMARC1; p=reject; aspf=" + mode.encode() + b"; adkim=" + mode.encode()
        )
        expect = PASS_REJECT if ok else REJECT
        case(
            f"SPF alignment {mode}: {identity} for {author}",
            "3.1.2; 3.2",
            record,
            expect,
            author=author,
            spf=("pass", identity.lower().rstrip(".")),
        )
        case(
            f"DKIM alignment {mode}: d={identity} for {author}",
            "3.1.1; 3.2",
            record,
            expect,
            author=author,
            spf=FAILS,
            dkim=(("pass", identity.lower().rstrip(".")),),
        )

MODES: list[tuple[str, bytes, bool, bool]] = [
    # (label, tags, SPF strict, DKIM strict)
    ("defaults relaxed", b"", False, False),
    ("aspf=s", b"aspf=s", True, False),
    ("adkim=s", b"adkim=s", False, True),
    ("aspf=S (D2)", b"aspf=S", True, False),
    ("adkim=S (D2)", b"adkim=S", False, True),
    ("aspf=r", b"aspf=r", False, False),
    ("aspf=x: default r", b"aspf=x", False, False),
    ("adkim=x: default r", b"adkim=x", False, False),
    ("aspf=strict: default r", b"aspf=strict", False, False),
    ("adkim=relaxed: default r", b"adkim=relaxed", False, False),
    ("aspf empty: default r", b"aspf=", False, False),
    ("adkim=\\xff: default r", b"adkim=\xff", False, False),
    ("aspf=s;adkim=s", b"aspf=s; adkim=s", True, True),
]
for label, tags, spf_strict, dkim_strict in MODES:
    record = at(AUTHOR, b"v=DMARC1; p=reject" + (b"; " + tags if tags else b""))
    case(
        f"alignment mode {label}: SPF for a subdomain",
        "6.3 aspf; 3.1.2",
        record,
        REJECT if spf_strict else PASS_REJECT,
        spf=("pass", SUB),
    )
    case(
        f"alignment mode {label}: DKIM for a subdomain",
        "6.3 adkim; 3.1.1",
        record,
        REJECT if dkim_strict else PASS_REJECT,
        dkim=(("pass", SUB),),
    )

# --- 4.2, 6.6.2 results of the underlying checks -------------------------------------------------

R = at(AUTHOR, b"v=DMARC1; p=reject")
RS = at(AUTHOR, b"v=DMARC1; p=reject; aspf=s; adkim=s")
S_RES = "4.2; 6.6.2"
TEMP_REJECT = ("temperror", "reject", "none")
for spf_result in ("fail", "softfail", "neutral", "none", "permerror"):
    case(
        f"SPF {spf_result} for the author domain is no pass",
        S_RES,
        R,
        REJECT,
        spf=(spf_result, AUTHOR),
    )
for dkim_result in ("fail", "neutral", "permerror", "policy"):
    case(
        f"DKIM {dkim_result} for the author domain is no pass",
        S_RES,
        R,
        REJECT,
        dkim=((dkim_result, AUTHOR),),
    )
case("SPF pass aligned alone", S_RES, R, PASS_REJECT, spf=("pass", AUTHOR))
case("DKIM pass aligned alone", S_RES, R, PASS_REJECT, dkim=(("pass", AUTHOR),))
case(
    "SPF pass unaligned, DKIM pass aligned",
    S_RES,
    R,
    PASS_REJECT,
    spf=("pass", ATTACKER),
    dkim=(("pass", AUTHOR),),
)
case(
    "SPF pass aligned, DKIM fail aligned",
    S_RES,
    R,
    PASS_REJECT,
    spf=("pass", AUTHOR),
    dkim=(("fail", AUTHOR),),
)
case(
    "DKIM: one aligned pass among failures",
    S_RES,
    R,
    PASS_REJECT,
    dkim=(("fail", AUTHOR), ("pass", ATTACKER), ("pass", SUB)),
)
case(
    "DKIM: passes only for other domains",
    S_RES,
    R,
    REJECT,
    dkim=(("pass", ATTACKER), ("pass", "example.net")),
)
case(
    "SPF pass for another domain, DKIM fail for the author",
    S_RES,
    R,
    REJECT,
    spf=("pass", ATTACKER),
    dkim=(("fail", AUTHOR),),
)
case(
    "null sender: the HELO identity's pass aligns",
    "4.1; RFC 7208 2.4",
    R,
    PASS_REJECT,
    spf=("pass", "mx.example.com"),
)
case(
    "null sender: the HELO identity's pass, strict: no",
    "4.1; 3.1.2",
    RS,
    REJECT,
    spf=("pass", "mx.example.com"),
)
case("no SPF domain (IP literal HELO)", S_RES, R, REJECT, spf=("none", ""))
case(
    "pass under p=none",
    S_RES,
    at(AUTHOR, b"v=DMARC1; p=none"),
    ("pass", "none", "none"),
    spf=("pass", AUTHOR),
)
case(
    "pass under p=quarantine",
    S_RES,
    at(AUTHOR, b"v=DMARC1; p=quarantine"),
    ("pass", "quarantine", "none"),
    dkim=(("pass", AUTHOR),),
)
case("no policy: pass does not matter", S_RES, {}, NO_POLICY, spf=("pass", AUTHOR))

# temporary errors: only one that could have been an aligned pass (D8)
S_TEMP = "6.6.2; 6.6.3 (D8)"
case("SPF temperror, aligned domain: temperror", S_TEMP, R, TEMP_REJECT, spf=("temperror", AUTHOR))
case(
    "SPF temperror, relaxed-aligned subdomain: temperror",
    S_TEMP,
    R,
    TEMP_REJECT,
    spf=("temperror", SUB),
)
case(
    "SPF temperror, subdomain under aspf=s: cannot align, fail",
    S_TEMP,
    RS,
    REJECT,
    spf=("temperror", SUB),
)
case("SPF temperror for an unrelated domain: fail", S_TEMP, R, REJECT, spf=("temperror", ATTACKER))
case(
    "SPF temperror for a sibling under the same suffix: fail",
    S_TEMP,
    at("example.co.uk", b"v=DMARC1; p=reject"),
    REJECT,
    author="example.co.uk",
    spf=("temperror", "other.co.uk"),
)
case("DKIM temperror, aligned d=: temperror", S_TEMP, R, TEMP_REJECT, dkim=(("temperror", AUTHOR),))
case(
    "DKIM temperror, relaxed-aligned d=: temperror",
    S_TEMP,
    R,
    TEMP_REJECT,
    dkim=(("temperror", SUB),),
)
case(
    "DKIM temperror, subdomain d= under adkim=s: fail",
    S_TEMP,
    RS,
    REJECT,
    dkim=(("temperror", SUB),),
)
case("DKIM temperror for an unrelated d=: fail", S_TEMP, R, REJECT, dkim=(("temperror", ATTACKER),))
case(
    "DKIM temperror unaligned and SPF temperror unaligned: fail",
    S_TEMP,
    R,
    REJECT,
    spf=("temperror", ATTACKER),
    dkim=(("temperror", "example.net"),),
)
case(
    "DKIM temperror unaligned, SPF temperror aligned: temperror",
    S_TEMP,
    R,
    TEMP_REJECT,
    spf=("temperror", AUTHOR),
    dkim=(("temperror", "example.net"),),
)
case(
    "DKIM temperror aligned but SPF passes aligned: pass",
    S_TEMP,
    R,
    PASS_REJECT,
    spf=("pass", AUTHOR),
    dkim=(("temperror", AUTHOR),),
)
case(
    "SPF temperror aligned but DKIM passes aligned: pass",
    S_TEMP,
    R,
    PASS_REJECT,
    spf=("temperror", AUTHOR),
    dkim=(("pass", AUTHOR),),
)
case(
    "SPF temperror aligned, DKIM fail aligned: temperror",
    S_TEMP,
    R,
    TEMP_REJECT,
    spf=("temperror", AUTHOR),
    dkim=(("fail", AUTHOR),),
)
case(
    "SPF temperror under p=quarantine",
    S_TEMP,
    at(AUTHOR, b"v=DMARC1; p=quarantine"),
    ("temperror", "quarantine", "none"),
    spf=("temperror", AUTHOR),
)
case(
    "SPF temperror under p=none",
    S_TEMP,
    at(AUTHOR, b"v=DMARC1; p=none"),
    ("temperror", "none", "none"),
    spf=("temperror", AUTHOR),
)
case("SPF temperror but no policy: none", S_TEMP, {}, NO_POLICY, spf=("temperror", AUTHOR))
case("SPF not evaluated (unknown domain): temperror", S_TEMP, R, TEMP_REJECT, spf=None)
case(
    "SPF not evaluated, DKIM passes aligned: pass",
    S_TEMP,
    R,
    PASS_REJECT,
    spf=None,
    dkim=(("pass", AUTHOR),),
)
case("SPF permerror aligned is final: fail", S_TEMP, R, REJECT, spf=("permerror", AUTHOR))
case("DKIM permerror aligned is final: fail", S_TEMP, R, REJECT, dkim=(("permerror", AUTHOR),))

# --- 6.6.1 several author domains ---------------------------------------------------------------

S_MULTI = "6.6.1 (D9)"
MULTI_DNS: Dns = {
    **at("reject.example", b"v=DMARC1; p=reject"),
    **at("quarantine.example", b"v=DMARC1; p=quarantine"),
    **at("none.example", b"v=DMARC1; p=none"),
    "_dmarc.temp.example": TEMP,
}
THROWAWAY = tuple(f"throwaway{i}.example" for i in range(20))
case(
    "two authors: the reject one that fails decides",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=("none.example", "reject.example"),
)
case(
    "two authors: order does not matter",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=("reject.example", "none.example"),
)
case(
    "quarantine and reject both fail: reject",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=("quarantine.example", "reject.example"),
)
case(
    "no policy and quarantine: quarantine",
    S_MULTI,
    MULTI_DNS,
    QUARANTINE,
    author=("throwaway0.example", "quarantine.example"),
)
case(
    "reject passes, quarantine fails: quarantine",
    S_MULTI,
    MULTI_DNS,
    QUARANTINE,
    author=("reject.example", "quarantine.example"),
    spf=("pass", "reject.example"),
)
case(
    "both pass",
    S_MULTI,
    MULTI_DNS,
    PASS_REJECT,
    author=("reject.example", "sub.reject.example"),
    spf=("pass", "reject.example"),
)
case(
    "a temperror under unknown policy beats a quarantine failure",
    S_MULTI,
    MULTI_DNS,
    ("temperror", "unknown", "none"),
    author=("quarantine.example", "temp.example"),
)
case(
    "a reject failure beats a temperror",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=("temp.example", "reject.example"),
)
case(
    "five throw-away authors cannot hide a p=reject one (issue item 4)",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=(*THROWAWAY[:5], "reject.example"),
)
case(
    "nine throw-away authors and a p=reject one: all ten evaluated",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=(*THROWAWAY[:9], "reject.example"),
)
case("ten throw-away authors: no policy", S_MULTI, MULTI_DNS, NO_POLICY, author=THROWAWAY[:10])
case(
    "eleven throw-away authors: past the bound, never none",
    S_MULTI,
    MULTI_DNS,
    ("permerror", "unknown", "reject"),
    author=THROWAWAY[:11],
)
case(
    "twenty throw-away authors: past the bound, never none",
    S_MULTI,
    MULTI_DNS,
    ("permerror", "unknown", "reject"),
    author=THROWAWAY,
)
case(
    "past the bound with a p=reject failure first: that failure",
    S_MULTI,
    MULTI_DNS,
    REJECT,
    author=("reject.example", *THROWAWAY),
)
case(
    "past the bound, the p=reject author hidden beyond it: still refused",
    S_MULTI,
    MULTI_DNS,
    ("permerror", "unknown", "reject"),
    author=(*THROWAWAY, "reject.example"),
)
case(
    "past the bound even when the first ten pass",
    S_MULTI,
    MULTI_DNS,
    ("permerror", "unknown", "reject"),
    author=tuple(f"s{i}.reject.example" for i in range(11)),
    spf=("pass", "reject.example"),
)
