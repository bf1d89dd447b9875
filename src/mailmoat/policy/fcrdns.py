"""Forward-confirmed reverse DNS (iprev, RFC 8601 section 3): the client's address has a PTR
name that resolves back to that address.

The lookups start when the client connects and run while it talks (when every answer is in
the resolver's cache, the result is computed at once, without a task, and kept per client
address until the first of its answers expires, at most `dns.cache_size` results); the
verdict is applied at the first RCPT. At most `MAX_NAMES` PTR names are tried (as RFC 7208
does for its "ptr").
Results: pass (with the confirmed name), fail (no PTR, or no PTR name resolves back), temperror.
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Address, IPv6Address

from mailmoat.config import FcrdnsSettings
from mailmoat.dns import Answer, Resolver, reverse_name
from mailmoat.dns.cache import TtlCache
from mailmoat.limits import FCRDNS_MAX_NAMES as MAX_NAMES
from mailmoat.policy.base import Check, Client, HookResult, Verdict, plain_ip
from mailmoat.policy.results import ALLOWLISTED, IPREV, Iprev
from mailmoat.policy.score import PENDING, Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply

R_FCRDNS = reply(550, "5.7.25", "Client host rejected: cannot find your hostname")


def _from_ptr(ptr: Answer) -> Iprev | None:
    """The result when the PTR answer decides alone (no name to confirm), else None."""
    if ptr.temporary:
        return Iprev("temperror", reason=f"PTR lookup: {ptr.error}")
    if not ptr.records:
        return Iprev("fail", reason="no PTR record")
    return None


def _confirm(ip_text: str, names: list[str], answers: list[Answer]) -> Iprev:
    for name, answer in zip(names, answers, strict=True):
        if ip_text in answer.records:
            return Iprev("pass", name=name)
    if any(a.temporary for a in answers):
        return Iprev("temperror", names[0], reason="address lookup of the PTR name failed")
    return Iprev("fail", names[0], reason=f"{', '.join(names)} does not resolve to {ip_text}")


async def iprev(resolver: Resolver, ip: IPv4Address | IPv6Address) -> Iprev:
    ip = plain_ip(ip)
    ptr = await resolver.ptr(ip)
    decided = _from_ptr(ptr)
    if decided is not None:
        return decided
    names = [str(n) for n in ptr.records[:MAX_NAMES]]
    answers = await asyncio.gather(*(resolver.addresses(n) for n in names))
    return _confirm(str(ip), names, list(answers))


def cached_iprev(resolver: Resolver, reverse: str, ip_text: str) -> tuple[Iprev, float] | None:
    """`iprev` from cached answers alone (`reverse`: the PTR name), with the time the first of
    them expires; None when one is missing."""
    ptr = resolver.cached(reverse, "PTR")
    if ptr is None:
        return None
    decided = _from_ptr(ptr)
    if decided is not None:
        return decided, ptr.expires
    names = [str(n) for n in ptr.records[:MAX_NAMES]]
    answers = []
    for name in names:
        answer = resolver.cached_addresses(name)
        if answer is None:
            return None
        answers.append(answer)
    expires = min(ptr.expires, *(a.expires for a in answers))
    return _confirm(ip_text, names, answers), expires


class FcrdnsCheck(Check):
    name = "fcrdns"
    writes = (IPREV,)
    reads = (ALLOWLISTED,)

    def __init__(self, settings: FcrdnsSettings, resolver: Resolver, karma: Karma) -> None:
        self.s = settings
        self.resolver = resolver
        self.karma = karma
        self.results: TtlCache[str, Iprev] = TtlCache(resolver.s.cache_size, resolver.clock)
        """Results computed from cached answers, by client address, until the first expires."""

    def connect(self, client: Client) -> Verdict:
        st = self.karma.state(client)
        if st.exempt:
            return None
        now = self.results.get(st.ip_text)
        if now is None:
            found = cached_iprev(self.resolver, reverse_name(client.ip), st.ip_text)
            if found is None:
                st.start(IPREV, iprev(self.resolver, client.ip))
                return None
            now = found[0]
            self.results.put(st.ip_text, now, found[1])
        st.set(IPREV, now)
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt or st.ready(ALLOWLISTED):
            return None
        done = st.client_outcomes.get(self.name)
        if done is not None:
            return done.verdict
        result = st.ready(IPREV)
        return self._decide(st) if result is PENDING else self._apply(st, result)

    async def _decide(self, st: SessionState) -> Verdict:
        return self._apply(st, await st.result(IPREV))

    def _apply(self, st: SessionState, result: Iprev | None) -> Verdict:
        if result is None:
            return None
        detail = result.reason or result.name
        return apply(
            st,
            Outcome(self.name, result.result, detail),
            self.s.action,
            R_FCRDNS,
            failed=result.result == "fail",
            points=self.s.points,
        )
