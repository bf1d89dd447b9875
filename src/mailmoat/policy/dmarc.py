"""DMARC (RFC 7489): does the author's domain (RFC5322.From) publish a policy, and does the
message pass SPF or DKIM in alignment with that domain?

Evaluated here rather than with a library: the only Python DMARC evaluator on PyPI (`dmarc`)
is a small one-person package with little use, while the evaluation is short and we need it to
use our DNS layer and to keep temporary errors apart from failures. The organizational domain
comes from the Public Suffix List as shipped in the `publicsuffixlist` package (no download at
run time; updated with the package); a public suffix used as an author domain is its own
organizational domain. Records are parsed in `dmarc_record` (its docstring lists the decisions
taken where the RFC leaves room); tests/policy/dmarc_corpus.py holds the cases, each with the
section it follows.

* Policy discovery (6.6.3): the DMARC records (first tag exactly `v=DMARC1`) at
  _dmarc.<author domain>; only when there is none, those at _dmarc.<organizational domain>
  (never a name in between). More than one record, or one that gives no policy (6.6.3 step
  6), is no policy: a broken record at the author domain does not fall back to the parent's.
  p, sp, adkim, aspf and pct are used; rua only to tell step 6.1 from 6.2 (we send no reports).
* Pass: SPF passed for an aligned domain (MAIL FROM, or HELO for the null sender), or a DKIM
  signature passed for an aligned d=. Relaxed alignment: same organizational domain; strict:
  the same domain.
* Disposition: p (sp for a subdomain whose policy came from the organizational domain),
  sampled by pct (6.6.4: outside the sample, reject becomes quarantine, quarantine none).
* temperror: the policy lookup failed, or the message would fail but an SPF or DKIM result
  that could have aligned was a temporary error (it might have passed). A temporary error for
  a domain that cannot align changes nothing: the message fails. Never taken as a pass.

Several From fields or addresses (6.6.1): each author domain is evaluated and the strictest
outcome wins, so a second author cannot hide a spoofed first one. The work is bounded: past
`MAX_AUTHOR_DOMAINS` distinct domains, the ones not evaluated count as the strictest outcome
(a refusal, result permerror), never as "none".
"""

from __future__ import annotations

import asyncio
import random
import re
from email.utils import getaddresses
from functools import cache, lru_cache
from typing import Protocol

import dns.exception
import dns.name
from publicsuffixlist import PublicSuffixList

from mailmoat.config import DmarcSettings
from mailmoat.dns import Answer, Resolver, Status
from mailmoat.dns.cache import TtlCache
from mailmoat.headers import HeaderField, Headers
from mailmoat.limits import DMARC_CACHED_LENGTH as CACHED_LENGTH
from mailmoat.limits import DMARC_ORG_CACHE as ORG_CACHE
from mailmoat.limits import DMARC_RESULTS_KEPT as JUDGED
from mailmoat.limits import MAX_AUTHOR_DOMAINS, MAX_FROM_FIELD
from mailmoat.message import Message
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.dmarc_record import POLICIES, Record, is_dmarc, parse_record
from mailmoat.policy.results import (
    DKIM,
    DMARC,
    SPF,
    DkimResult,
    DmarcResult,
    SpfResults,
)
from mailmoat.policy.score import (
    PENDING,
    R_DNS_TEMP,
    Karma,
    Outcome,
    SessionState,
    apply,
    headers_now,
    message_headers,
)
from mailmoat.smtp.replies import Reply, reply


class TxtSource(Protocol):
    """Where policy records come from: the `Resolver`, or a table in tests."""

    async def query(self, name: str, rdtype: str) -> Answer: ...

    def cached(self, name: str, rdtype: str) -> Answer | None: ...


@cache
def _psl() -> PublicSuffixList:
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    domain = domain.lower().rstrip(".")
    return _org(domain) if len(domain) <= CACHED_LENGTH else _org.__wrapped__(domain)


@lru_cache(maxsize=ORG_CACHE)
def _org(domain: str) -> str:
    return _psl().privatesuffix(domain) or domain


def aligned(domain: str, author: str, strict: bool) -> bool:
    domain, author = domain.lower().rstrip("."), author.lower().rstrip(".")
    if strict:
        return domain == author
    return organizational_domain(domain) == organizational_domain(author)


_Policy = tuple[Status, Record | None, bool]
"""(status, record, found at the organizational domain instead of the author domain)."""


def _policy_names(domain: str) -> list[tuple[str, bool]]:
    org = organizational_domain(domain)
    names = [(f"_dmarc.{domain}", False)]
    return names if org == domain else [*names, (f"_dmarc.{org}", True)]


def _policy_in(answer: Answer, at_org: bool) -> _Policy | None:
    """What one policy lookup decides; None: look at the next name."""
    if answer.temporary:
        return Status.TEMPERROR, None, at_org
    records = [r for r in answer.records if is_dmarc(r)]
    if not records:
        return None  # 6.6.3 steps 3 and 5: the organizational domain's, if not this one
    if len(records) > 1:
        return Status.OK, None, at_org  # more than one record: no policy (6.6.3 step 5)
    # one record, whether or not it gives a policy (step 6): discovery ends here
    return Status.OK, parse_record(records[0]), at_org


async def find_policy(resolver: TxtSource, domain: str) -> _Policy:
    for name, at_org in _policy_names(domain):
        found = _policy_in(await resolver.query(name, "TXT"), at_org)
        if found is not None:
            return found
    return Status.NXDOMAIN, None, False


def find_policy_now(resolver: TxtSource, domain: str) -> tuple[_Policy, float] | None:
    """`find_policy` from the resolver's cache alone, with the time the first answer it used
    expires; None when an answer is missing."""
    expires = float("inf")
    for name, at_org in _policy_names(domain):
        answer = resolver.cached(name, "TXT")
        if answer is None:
            return None
        expires = min(expires, answer.expires)
        found = _policy_in(answer, at_org)
        if found is not None:
            return found, expires
    return (Status.NXDOMAIN, None, False), expires


async def evaluate(
    resolver: TxtSource,
    author: str,
    spf: SpfResults | None,
    dkim: list[DkimResult],
    rng: random.Random | None = None,
) -> DmarcResult:
    author = author.lower().rstrip(".")
    return judge(author, await find_policy(resolver, author), spf, dkim, rng)


async def evaluate_authors(
    resolver: TxtSource,
    domains: list[str],
    spf: SpfResults | None,
    dkim: list[DkimResult],
    rng: random.Random | None = None,
) -> DmarcResult:
    """The outcome for a message whose From names `domains` (as `author_domains` gives
    them): each of the first `MAX_AUTHOR_DOMAINS` evaluated, then `combined`."""
    none = _without_policy(domains)
    if none is not None:
        return none
    found = await asyncio.gather(
        *(evaluate(resolver, d, spf, dkim, rng) for d in domains[:MAX_AUTHOR_DOMAINS])
    )
    return combined(list(found), domains)


def judge(
    author: str,
    found: _Policy,
    spf: SpfResults | None,
    dkim: list[DkimResult],
    rng: random.Random | None = None,
) -> DmarcResult:
    """The DMARC result for `author` under the policy `found`. Remembered (`JUDGED`) unless
    pct sampling makes it random, or the names are long."""
    facts = (
        author,
        found,
        None if spf is None else (spf.mailfrom.result, spf.mailfrom.domain),
        tuple((r.result, r.domain) for r in dkim),
    )
    record = found[1]
    size = len(author) + sum(len(r.domain) for r in dkim)
    if size <= CACHED_LENGTH and (record is None or record.pct == 100):
        return _judged(*facts)
    return _judge(*facts, rng)


_Pair = tuple[str, str]
"""(result, domain) of SPF's MAIL FROM identity or of one DKIM signature."""


def _judge(
    author: str,
    found: _Policy,
    spf: _Pair | None,
    dkim: tuple[_Pair, ...],
    rng: random.Random | None = None,
) -> DmarcResult:
    status, record, at_org = found
    if status is Status.TEMPERROR:
        return DmarcResult("temperror", author, "unknown", reason="policy lookup failed")
    if record is None:
        return DmarcResult("none", author, reason="no policy")
    policy = record.sp if at_org and organizational_domain(author) != author else record.p
    spf_ok = spf is not None and spf[0] == "pass" and aligned(spf[1], author, record.aspf == "s")
    dkim_ok = [d for r, d in dkim if r == "pass" and aligned(d, author, record.adkim == "s")]
    if spf_ok or dkim_ok:
        how = "spf" if spf_ok else f"dkim {dkim_ok[0]}"
        return DmarcResult("pass", author, policy, "none", reason=f"aligned {how}")
    # no aligned pass: only a temporary error that could have been an aligned pass changes
    # that (spf None: SPF was not evaluated, its domain is unknown)
    spf_temp = spf is None or (
        spf[0] == "temperror" and aligned(spf[1], author, record.aspf == "s")
    )
    dkim_temp = [d for r, d in dkim if r == "temperror" and aligned(d, author, record.adkim == "s")]
    if spf_temp or dkim_temp:
        what = "SPF" if spf_temp else f"DKIM {dkim_temp[0]}"
        return DmarcResult(
            "temperror", author, policy, reason=f"aligned {what} could not be checked"
        )
    disposition = policy
    if record.pct < 100 and (rng or random).random() * 100 >= record.pct:
        disposition = POLICIES[max(POLICIES.index(policy) - 1, 0)]
    return DmarcResult(
        "fail", author, policy, disposition, reason="neither SPF nor DKIM aligned and passing"
    )


_judged = lru_cache(maxsize=JUDGED)(_judge)


UNREADABLE = "(unreadable From)"
"""The author domain of a From field that is too long or that the address parser fails on."""


def author_domains(headers: Headers) -> list[str]:
    """The distinct domains of the From addresses, in order: at most `MAX_AUTHOR_DOMAINS` + 1
    (the last one, if there, says that there are more than are evaluated). A From field that
    cannot be read gives `UNREADABLE`."""
    domains: dict[str, None] = {}
    size = 0
    for f in headers.get("from"):
        raw = f.raw
        size += len(raw)
        if size > MAX_FROM_FIELD:
            found: tuple[str, ...] = (UNREADABLE,)
        elif len(raw) <= CACHED_LENGTH:
            found = _domains(raw)
        else:
            found = _domains.__wrapped__(raw)
        for domain in found:
            domains[domain] = None
            if len(domains) > MAX_AUTHOR_DOMAINS:
                return list(domains)
        if size > MAX_FROM_FIELD:
            break  # the fields past the bound are not looked at
    return list(domains)


INVALID_AUTHOR_DOMAIN = "an author domain that is not a domain name"
UNREADABLE_AUTHOR = "no From field with an author domain that can be read"
_DOMAIN_NAME = re.compile(
    r"(?=[a-z0-9._-]{1,253}$)(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)*"
    r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
)
"""What an author domain must be once U-labels are A-labels: letters, digits, hyphens (and
underscores, which exist in DNS), labels of at most 63, at most 253 in all."""

_AT_DOMAIN = re.compile(r"@[\s\"\[]*([^\s<>()\[\]\"@,;:\\]+)")
"""A domain after an "@", for a From field the address parser makes nothing of."""


@lru_cache(maxsize=ORG_CACHE)
def _domains(raw: bytes) -> tuple[str, ...]:
    """The domains of the addresses in one From field (`raw`: the field as sent). A field the
    address parser finds no address in, but with an "@" in it (`x@evil.test <a@bank.test>`),
    gives every domain after an "@": what a reader may take for the author is evaluated
    rather than skipped. U-labels become A-labels (6.6.1), as DKIM's d= and SPF give them."""
    try:
        value = HeaderField("from", raw, 0, len(raw)).value
        found = [
            address.rpartition("@")[2] for _name, address in getaddresses([value]) if "@" in address
        ]
        if not any(d.strip() for d in found) and "@" in value:
            found = _AT_DOMAIN.findall(value)
    except Exception:  # RecursionError on 1,000 ":", and whatever else the parser raises
        return (UNREADABLE,)  # a field the parser fails on is an author it cannot read
    domains: dict[str, None] = {}
    for d in found:
        domain = d.strip().lower().rstrip(".>")
        if domain:
            domains[_a_label(domain)] = None
    return tuple(domains)


def _a_label(domain: str) -> str:
    """The A-label form of an author domain; one holding an invisible or control character
    is returned as it is (no domain name: `_without_policy` makes it a failure), because
    IDNA 2003 would encode `test` + U+061C into a valid-looking `xn--test-j4f` with no policy,
    while a reader shows plain `test`."""
    if domain.isascii():
        return domain
    if not domain.isprintable():
        return domain
    try:
        return dns.name.from_unicode(domain).to_text(omit_final_dot=True).lower()
    except (dns.exception.DNSException, UnicodeError, ValueError):
        return domain  # not a name that can exist: its lookup finds no policy


_SEVERITY = {
    ("fail", "reject"): 6,
    ("permerror", "reject"): 6,
    ("temperror", "reject"): 5,
    ("temperror", "unknown"): 5,
    ("fail", "quarantine"): 4,
    ("temperror", "quarantine"): 3,
    ("fail", "none"): 2,
    ("temperror", "none"): 1,
}


def strictest(results: list[DmarcResult]) -> DmarcResult:
    """The outcome that asks for the most: a failure under reject, then a temporary error
    where the policy is (or may be) reject, and so on; pass and none last. Of equals, the
    first."""
    if len(results) == 1:  # one author domain, as nearly always
        return results[0]

    def severity(r: DmarcResult) -> int:
        return _SEVERITY.get((r.result, _deciding(r)), 0)

    return max(results, key=severity)


def _deciding(r: DmarcResult) -> str:
    """The policy that decides: the disposition for a failure, the published one for a
    temperror (it might have failed)."""
    return r.disposition if r.result in ("fail", "permerror") else r.policy


def _refusal(r: DmarcResult) -> Reply:
    if r.reason == UNREADABLE_AUTHOR:
        text = "Message rejected: its From field has no author domain that can be read"
    elif r.reason == INVALID_AUTHOR_DOMAIN:
        text = "Message rejected: its From field names a domain that is not a valid domain name"
    elif r.result == "permerror":
        text = (
            f"Message rejected: its From field names more than {MAX_AUTHOR_DOMAINS} domains,"
            " too many to check DMARC for"
        )
    else:
        text = (
            f"Message rejected: {r.domain} publishes a DMARC policy of {r.disposition}"
            " and the message does not pass it"
        )
    return reply(550, "5.7.1", text)


def _without_policy(domains: list[str]) -> DmarcResult | None:
    """The result when there is no author domain that can be read (no From, a From without
    an address with a domain, `=?utf-8?b?...?=`, `ceo\uff20bank.test`, a From too long or
    that the parser fails on) or one that cannot be a domain name at all (permerror, counted
    as a failure under reject: a reader shows `ceo@bank.test` for these, and for
    `ceo@bank.test` + U+202E, whose lookup would find no policy); else None. An address
    literal has no policy to find."""
    if not domains or UNREADABLE in domains[:MAX_AUTHOR_DOMAINS]:
        return DmarcResult("permerror", "", "unknown", "reject", reason=UNREADABLE_AUTHOR)
    for domain in domains[:MAX_AUTHOR_DOMAINS]:
        if not _DOMAIN_NAME.fullmatch(domain) and not domain.startswith("["):
            return DmarcResult(
                "permerror", domain, "unknown", "reject", reason=INVALID_AUTHOR_DOMAIN
            )
    return None


def combined(results: list[DmarcResult], domains: list[str]) -> DmarcResult:
    """The outcome for the message from the results of its first `MAX_AUTHOR_DOMAINS` author
    domains: the strictest, where the domains past the bound count as a failure under reject
    (6.6.1: the strictest policy of those that fail; what we did not evaluate may be that)."""
    if len(domains) > MAX_AUTHOR_DOMAINS:
        beyond = DmarcResult(
            "permerror",
            domains[MAX_AUTHOR_DOMAINS],
            "unknown",
            "reject",
            reason=f"more than {MAX_AUTHOR_DOMAINS} author domains: the others count as failing",
        )
        results = [*results, beyond]
    return strictest(results)


class DmarcCheck(Check):
    name = "dmarc"
    writes = (DMARC,)
    reads = (SPF, DKIM)

    def __init__(self, settings: DmarcSettings, resolver: Resolver, karma: Karma) -> None:
        self.s = settings
        self.resolver = resolver
        self.karma = karma
        self.policies: TtlCache[str, _Policy] = TtlCache(resolver.s.cache_size, resolver.clock)
        """Policies found from cached answers, by author domain, until the first expires."""

    async def start(self) -> None:
        """Load the public suffix list now (a few hundred ms of CPU): loaded by the first
        message, it stalled every session of the process meanwhile."""
        _psl()

    def message(self, client: Client, message: Message) -> HookResult:
        st = self.karma.state(client)
        if st.exempt:
            return None
        headers = headers_now(st, message)
        spf = st.ready(SPF)
        if headers is None or spf is PENDING:
            return self._later(st, message)
        domains = author_domains(headers)
        result = _without_policy(domains)
        if result is None:
            dkim = st.ready(DKIM) or []
            found = []
            for domain in domains[:MAX_AUTHOR_DOMAINS]:
                policy = self.policies.get(domain)
                if policy is None:
                    now = find_policy_now(self.resolver, domain)
                    if now is None:
                        return self._later(st, message)
                    policy = now[0]
                    self.policies.put(domain, policy, now[1])
                found.append(judge(domain, policy, spf, dkim))
            result = combined(found, domains)
        st.set(DMARC, result)
        return self._apply(st, result)

    async def _later(self, st: SessionState, message: Message) -> Verdict:
        headers = await message_headers(st, message)
        domains = author_domains(headers)
        spf: SpfResults | None = await st.result(SPF)
        result = await evaluate_authors(self.resolver, domains, spf, st.ready(DKIM) or [])
        st.set(DMARC, result)
        return self._apply(st, result)

    def _apply(self, st: SessionState, r: DmarcResult) -> Verdict:
        s = self.s
        policy = _deciding(r)
        if policy in ("reject", "unknown"):  # a policy we could not read may be reject
            action, points = s.action, s.reject_points
        elif policy == "quarantine":
            action, points = s.quarantine_action, s.quarantine_points
        else:
            action, points = "log", 0
        if action == "off":
            action = "log"
        reason = f"{r.domain} p={r.policy} dis={r.disposition}: {r.reason}"
        failed = r.result in ("fail", "permerror")
        return apply(
            st,
            Outcome(self.name, r.result, reason),
            action,
            # apply() uses the refusal for a failure only: build it for one only
            _refusal(r) if failed else R_DNS_TEMP,
            failed=failed,
            points=points,
            pending=points if r.result == "temperror" else 0,
            per_transaction=True,
        )
