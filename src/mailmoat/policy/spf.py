"""SPF (RFC 7208) for the MAIL FROM and HELO identities, with pyspf fed by our DNS layer.

pyspf evaluates records synchronously and asks its module-level `DNSLookup` for every record.
We never let it block the event loop or reach the network itself: `DNSLookup` is replaced by a
function that answers only from a table of answers our asynchronous resolver already fetched
(or holds in its cache). When pyspf asks for something not there, it notes the name and raises
`_Missing`; the evaluation is abandoned, the missing records are fetched asynchronously (through
the cache), and the evaluation starts again from the top with a fuller table. The note, not the
exception, is what counts: pyspf looks up the exp= explanation (and the %{p} macro in it) inside
a bare `except:`, which swallows the exception and would leave the explanation never fetched.
Each round is pure computation on a few records; the rounds are bounded (`MAX_ROUNDS`, above
what pyspf's own lookup limits allow), so are the octets of records they read in all
(`MAX_READ`: every round reads every record again, and the sender's domain chooses their
size), and the whole check is bounded by `spf.timeout` (RFC 7208 4.6.4 suggests at least 20 s).

The checks start at MAIL FROM (while the client sends its recipients) and the verdict is
applied at the first RCPT. When every answer is in the resolver's cache (or the result is in
the evaluator's own cache, `spf.cache_size`), the result is there at once, without a task.
For the null sender the HELO identity decides (RFC 7208 2.4).
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from mailmoat.config import SpfSettings, default_of
from mailmoat.dns import Answer, Resolver
from mailmoat.dns.cache import TtlCache
from mailmoat.dns.resolver import normalise
from mailmoat.limits import SPF_MAX_EXPLANATION as MAX_EXPLANATION
from mailmoat.limits import SPF_MAX_READ as MAX_READ
from mailmoat.limits import SPF_MAX_ROUNDS as MAX_ROUNDS
from mailmoat.limits import SPF_RESULTS_KEPT as RESULTS_KEPT
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.results import SPF, SpfResult, SpfResults
from mailmoat.policy.score import PENDING, Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import reply

R_SPF_FAIL = reply(550, "5.7.23", "SPF validation failed")


@dataclass(slots=True)
class _Lookups:
    table: dict[tuple[str, str], Answer]
    """The answers this evaluation used (fetched, or found in the resolver's cache)."""
    resolver: Resolver
    missing: list[tuple[str, str]] = field(default_factory=list)
    """Lookups pyspf asked for that the table lacked, even where pyspf swallowed `_Missing`."""


_TABLE: contextvars.ContextVar[_Lookups | None] = contextvars.ContextVar(
    "mailmoat_spf_answers", default=None
)


class _Missing(Exception):
    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(keys)
        self.keys = keys


def _dns_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup: answers from the evaluation's table or the resolver's cache."""
    import spf

    lookups = _TABLE.get()
    if lookups is None:
        raise spf.TempError("DNS lookups for SPF go through mailmoat's resolver")
    if qtype == "SPF":
        return []  # the SPF RR type (99) is obsolete (RFC 7208 3.1)
    key = (normalise(str(name)), qtype)
    answer = lookups.table.get(key)
    if answer is None:
        answer = lookups.resolver.cached(*key)
        if answer is None:
            if key not in lookups.missing:
                lookups.missing.append(key)
            raise _Missing(lookups.missing)
        lookups.table[key] = answer
    if answer.temporary:
        raise spf.TempError(f"DNS {answer.error or 'temporary error'} for {name} {qtype}")
    if qtype == "TXT":
        return [((name, qtype), (record,)) for record in answer.records]
    return [((name, qtype), record) for record in answer.records]


@cache
def _query() -> type[Any]:
    """pyspf, imported and set up once, when the first evaluator is made (a process's start,
    not its first message): a process whose settings leave SPF out never imports it."""
    import spf

    spf.DNSLookup = _dns_lookup

    class _Query(spf.query):
        """pyspf's query with RFC 7208 5.5's rule for validating PTR names (the ptr mechanism
        and the %{p} macro): a DNS error on the PTR lookup makes no name valid, and one on a
        name's address lookup skips that name. pyspf 2.0.14 turns either into temperror for
        the whole check (a case for upstream)."""

        def validated_ptrs(self) -> list[str]:
            try:
                names = self.dns_ptr(self.i)[: spf.MAX_PTR]
            except spf.TempError:
                return []
            valid = []
            for name in names:
                try:
                    if self.cidrmatch(self.dns_a(name, self.A), self.cidrmax):
                        valid.append(name)
                except spf.TempError:
                    continue
            return valid

    return _Query


_result = lru_cache(maxsize=RESULTS_KEPT)(SpfResult)
"""The result objects of cached outcomes, made once (a frozen dataclass costs more to make
than to look up). Bounded: the domain by the SMTP syntax, the explanation by
`MAX_EXPLANATION`."""

_Outcome = tuple[str, int, str]
"""pyspf's (result, code, explanation)."""
TOO_LARGE: _Outcome = (
    "permerror",
    550,
    f"SPF records too large to evaluate (over {MAX_READ} octets read)",
)
_Key = tuple[str, str, str | None, str | None]
"""(client address, domain, HELO name, local part); the last two None for records without
macros, whose result depends on neither."""


class SpfEvaluator:
    """Evaluates one identity; keeps the results in a bounded cache (`cache_size` entries,
    least recently used dropped first), each no longer than the earliest expiry of the DNS
    answers it came from. Only results from cached answers are kept: a temporary error, or
    a result that used an answer with a TTL of 0, is evaluated again next time."""

    def __init__(
        self,
        resolver: Resolver,
        timeout: float = default_of(SpfSettings, "timeout"),
        cache_size: int = default_of(SpfSettings, "cache_size"),
    ) -> None:
        _query()
        self.resolver = resolver
        self.timeout = timeout
        self.evaluations = 0
        """pyspf runs so far (each round of each identity counts)."""
        self._results: TtlCache[_Key, _Outcome] = TtlCache(cache_size, resolver.clock)

    def __len__(self) -> int:
        return len(self._results)

    async def check(self, ip: str, sender: str, helo: str) -> SpfResult:
        """One identity: `sender` "" means the HELO identity (postmaster@helo)."""
        now = self.check_now(ip, sender, helo)
        if now is not None:
            return now
        identity, local, domain = _identity(sender, helo)
        try:
            async with asyncio.timeout(self.timeout):
                result, _code, explanation = await self._evaluate(ip, local, domain, helo)
        except TimeoutError:
            return SpfResult(identity, domain, "temperror", "SPF evaluation took too long")
        return SpfResult(identity, domain, result, explanation)

    def check_now(self, ip: str, sender: str, helo: str) -> SpfResult | None:
        """`check` without waiting: from the result cache, or evaluated at once when every
        answer it needs is cached; None when a lookup is missing."""
        identity, local, domain = _identity(sender, helo)
        if not domain or domain.startswith("["):
            return SpfResult(identity, domain, "none", "no domain to check")
        outcome = self._cached(ip, local, domain, helo)
        if outcome is None:
            table: dict[tuple[str, str], Answer] = {}
            try:
                outcome = self._round(ip, local, domain, helo, table)
            except _Missing:
                return None
            self._remember(ip, local, domain, helo, table, outcome)
        return _result(identity, domain, outcome[0], outcome[2])

    def _round(
        self, ip: str, local: str, domain: str, helo: str, table: dict[tuple[str, str], Answer]
    ) -> _Outcome:
        """One run of pyspf on the answers at hand; _Missing when it asked for others."""
        import spf

        self.evaluations += 1
        lookups = _Lookups(table, self.resolver)
        token = _TABLE.set(lookups)
        try:
            q = _query()(i=ip, s=f"{local}@{domain}", h=helo, receiver="mailmoat")
            q.l, q.o, q.d = local, domain, domain  # pyspf splits at the first "@"
            outcome: _Outcome = q.check()
        except (spf.PermError, spf.TempError) as err:  # raised by the constructor only
            outcome = "permerror", 550, str(err)
        except _Missing:
            pass  # noted in lookups.missing
        finally:
            _TABLE.reset(token)
        if lookups.missing:  # also when pyspf swallowed _Missing (exp=, %{p})
            raise _Missing(lookups.missing)
        result, code, explanation = outcome
        return result, code, explanation[:MAX_EXPLANATION]

    async def _evaluate(self, ip: str, local: str, domain: str, helo: str) -> _Outcome:
        table: dict[tuple[str, str], Answer] = {}
        size = 0  # octets of the TXT records in `table`, which each round reads again
        read = 0
        for _ in range(MAX_ROUNDS):
            read += size
            if read > MAX_READ:
                self._remember(ip, local, domain, helo, table, TOO_LARGE)
                return TOO_LARGE
            try:
                outcome = self._round(ip, local, domain, helo, table)
            except _Missing as missing:
                answers = await asyncio.gather(*(self.resolver.query(*k) for k in missing.keys))
                table.update(zip(missing.keys, answers, strict=True))
                size += sum(len(r) for a in answers if a.rdtype == "TXT" for r in a.records)
                continue
            self._remember(ip, local, domain, helo, table, outcome)
            return outcome
        return "temperror", 451, "too many DNS lookups"

    def _cached(self, ip: str, local: str, domain: str, helo: str) -> _Outcome | None:
        hit = self._results.get((ip, domain, None, None))
        return hit if hit is not None else self._results.get((ip, domain, helo, local))

    def _remember(
        self,
        ip: str,
        local: str,
        domain: str,
        helo: str,
        table: dict[tuple[str, str], Answer],
        outcome: _Outcome,
    ) -> None:
        if not table or outcome[0] == "temperror":
            return
        answers = table.values()
        if any(a.temporary for a in answers):
            return
        # a macro (%{l}, %{h}, ...) in any record makes the result depend on the whole identity
        macros = any(b"%" in r for a in answers if a.rdtype == "TXT" for r in a.records)
        key = (ip, domain, helo, local) if macros else (ip, domain, None, None)
        # an answer that was not cached (expires 0.0) keeps the result out
        self._results.put(key, outcome, min(a.expires for a in answers))


def _identity(sender: str, helo: str) -> tuple[str, str, str]:
    """(identity, local part, domain) of `sender`; "" for the HELO identity. An empty local
    part is "postmaster" (RFC 7208 4.3)."""
    if not sender:
        return "helo", "postmaster", helo.lower()
    local, _, domain = sender.rpartition("@")
    return "mailfrom", local or "postmaster", domain.lower()


class SpfCheck(Check):
    name = "spf"
    writes = (SPF,)

    def __init__(
        self,
        settings: SpfSettings,
        resolver: Resolver,
        karma: Karma,
    ) -> None:
        self.s = settings
        self.evaluator = SpfEvaluator(resolver, settings.timeout, settings.cache_size)
        self.karma = karma

    async def evaluate(self, client: Client, sender: str, ip: str) -> SpfResults:
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

    def evaluate_now(self, client: Client, sender: str, ip: str) -> SpfResults | None:
        """`evaluate` without waiting; None when a lookup is missing."""
        helo_name = client.helo or ""
        helo = None
        if self.s.helo or not sender:
            helo = self.evaluator.check_now(ip, "", helo_name)
            if helo is None:
                return None
        mailfrom = self.evaluator.check_now(ip, sender, helo_name) if sender else helo
        if mailfrom is None:
            return None
        return SpfResults(mailfrom, helo if self.s.helo else None)

    def mail(self, client: Client, event: MailFrom) -> Verdict:
        st = self.karma.state(client)
        if not st.exempt:
            now = self.evaluate_now(client, event.address, st.ip_text)
            if now is not None:
                st.set(SPF, now)
            else:
                st.start(SPF, self.evaluate(client, event.address, st.ip_text))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt or self.s.action == "off":
            return None
        done = st.tx_outcomes.get(self.name)
        if done is not None:
            return done.verdict
        results = st.ready(SPF)
        return self._decide(st) if results is PENDING else self._apply(st, results)

    async def _decide(self, st: SessionState) -> Verdict:
        return self._apply(st, await st.result(SPF))

    def _apply(self, st: SessionState, results: SpfResults | None) -> Verdict:
        if results is None:
            return None
        r = results.mailfrom
        s = self.s
        points = s.fail_points if r.result == "fail" else 0
        points = s.softfail_points if r.result == "softfail" else points
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
