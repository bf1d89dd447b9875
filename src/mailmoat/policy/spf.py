"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf fed by our DNS layer.

pyspf evaluates records synchronously and asks its module-level `DNSLookup` for every record.
We never let it block the event loop or reach the network itself: `DNSLookup` is replaced by a
function that answers only from a table of answers our asynchronous resolver already fetched.
When pyspf asks for something not yet in the table, the function raises `_Missing`; the
evaluation is abandoned, the missing record is fetched asynchronously (through the cache), and
the evaluation starts again from the top with a fuller table. Each round is pure computation on
a few records; the rounds are bounded (`MAX_ROUNDS`, above what pyspf's own lookup limits allow)
and the whole check is bounded by `spf.timeout` (RFC 7208 4.6.4 suggests at least 20 s).

The checks start at MAIL FROM (while the client sends its recipients) and the verdict is
applied at the first RCPT. For the null sender the HELO identity decides (RFC 7208 2.4).
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any

import spf

from mailmoat.config import SpfSettings
from mailmoat.dns import Answer, Resolver
from mailmoat.dns.resolver import normalise
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.fcrdns import plain_ip
from mailmoat.policy.score import Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import reply

MAX_ROUNDS = 200
"""Evaluations of one identity at most (one per record fetched)."""

R_SPF_FAIL = reply(550, "5.7.23", "SPF validation failed")

_TABLE: contextvars.ContextVar[dict[tuple[str, str], Answer] | None] = contextvars.ContextVar(
    "mailmoat_spf_answers", default=None
)


class _Missing(Exception):
    def __init__(self, key: tuple[str, str]) -> None:
        super().__init__(key)
        self.key = key


def _dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup: answers from the table of the evaluation running on this thread."""
    table = _TABLE.get()
    if table is None:
        raise spf.TempError("DNS lookups for SPF go through mailmoat's resolver")
    if qtype == "SPF":
        return []  # the SPF RR type (99) is obsolete (RFC 7208 3.1)
    key = (normalise(str(name)), qtype)
    answer = table.get(key)
    if answer is None:
        raise _Missing(key)
    if answer.temporary:
        raise spf.TempError(f"DNS {answer.error or 'temporary error'} for {name} {qtype}")
    if qtype == "TXT":
        return [((name, qtype), (record,)) for record in answer.records]
    return [((name, qtype), record) for record in answer.records]


spf.DNSLookup = _dns_lookup


@dataclass(frozen=True, slots=True)
class SpfResult:
    identity: str
    """mailfrom or helo"""
    domain: str
    result: str
    """pass, fail, softfail, neutral, none, temperror, permerror"""
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class SpfResults:
    mailfrom: SpfResult
    """The MAIL FROM identity (for the null sender: the HELO identity's result)."""
    helo: SpfResult | None


class SpfEvaluator:
    def __init__(self, resolver: Resolver, timeout: float = 20.0) -> None:
        self.resolver = resolver
        self.timeout = timeout

    async def check(self, ip: str, sender: str, helo: str) -> SpfResult:
        """One identity: `sender` "" means the HELO identity (postmaster@helo)."""
        local, _, domain = sender.rpartition("@") if sender else ("postmaster", "@", helo)
        identity = "mailfrom" if sender else "helo"
        domain = domain.lower()
        if not domain or domain.startswith("["):
            return SpfResult(identity, domain, "none", "no domain to check")
        try:
            async with asyncio.timeout(self.timeout):
                result, _code, explanation = await self._evaluate(ip, local, domain, helo)
        except TimeoutError:
            return SpfResult(identity, domain, "temperror", "SPF evaluation took too long")
        return SpfResult(identity, domain, result, explanation)

    async def _evaluate(self, ip: str, local: str, domain: str, helo: str) -> tuple[str, int, str]:
        table: dict[tuple[str, str], Answer] = {}
        for _ in range(MAX_ROUNDS):
            token = _TABLE.set(table)
            try:
                q = spf.query(i=ip, s=f"{local}@{domain}", h=helo, receiver="mailmoat")
                q.l, q.o, q.d = local, domain, domain  # pyspf splits at the first "@"
                return q.check()  # type: ignore[no-any-return]
            except _Missing as missing:
                key = missing.key
            except (spf.PermError, spf.TempError) as err:  # raised by the constructor only
                return "permerror", 550, str(err)
            finally:
                _TABLE.reset(token)
            table[key] = await self.resolver.query(*key)
        return "temperror", 451, "too many DNS lookups"


class SpfCheck(Check):
    name = "spf"

    def __init__(
        self,
        settings: SpfSettings,
        resolver: Resolver,
        karma: Karma,
        timeout: float = 20.0,
    ) -> None:
        self.s = settings
        self.evaluator = SpfEvaluator(resolver, timeout)
        self.karma = karma

    async def evaluate(self, client: Client, sender: str) -> SpfResults:
        ip = str(plain_ip(client.ip))
        helo_name = client.helo or ""
        helo_task = None
        if self.s.helo or not sender:
            helo_task = asyncio.ensure_future(self.evaluator.check(ip, "", helo_name))
        try:
            mailfrom = await self.evaluator.check(ip, sender, helo_name) if sender else None
            helo = await helo_task if helo_task is not None else None
        finally:
            if helo_task is not None and not helo_task.done():
                helo_task.cancel()
        if mailfrom is None:
            assert helo is not None
            mailfrom = helo
        return SpfResults(mailfrom, helo if self.s.helo else None)

    def mail(self, client: Client, event: MailFrom) -> Verdict:
        st = self.karma.state(client)
        if not st.exempt:
            st.start("tx:spf", self.evaluate(client, event.address))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt or self.s.action == "off":
            return None
        done = st.tx_outcomes.get(self.name)
        return done.verdict if done is not None else self._decide(st)

    async def _decide(self, st: SessionState) -> Verdict:
        results: SpfResults | None = await st.result("tx:spf")
        if results is None:
            return None
        r = results.mailfrom
        s = self.s
        points = {"fail": s.fail_points, "softfail": s.softfail_points}.get(r.result, 0)
        failed = r.result == "fail" or (r.result == "softfail" and s.action == "score")
        text = f"{r.identity} {r.domain}" + (f": {r.explanation}" if r.explanation else "")
        return apply(
            st,
            Outcome(self.name, r.result, text),
            s.action,
            R_SPF_FAIL,
            failed=failed,
            points=points,
            pending=s.fail_points if r.result == "temperror" else 0,
            per_transaction=True,
        )
