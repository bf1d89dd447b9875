"""DNS block and allow lists, weighted and combined into one score as Postfix's postscreen does.

Each configured list (`dnsbl.lists`, postscreen syntax, see mailmoat.dns.lists) whose answer
for the client passes its reply filter adds its weight. A combined weight of at least
`dnsbl.threshold` makes the client listed; at most `dnsbl.allowlist_threshold` (negative, from
allow lists with negative weights) makes it allow-listed: it then skips the FCrDNS and HELO
checks and the session score. All lists are asked at once when the client connects; the
verdict is applied at the first RCPT. The combined result is kept per client address in the
store for `dnsbl.cache_ttl` seconds at most (the shortest TTL of the answers when lower).

A list that could not be asked (DNS timeout, SERVFAIL) is not taken as "not listed" where it
matters: when its weight could have brought the client to the threshold, the answer is 4xx.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address

from mailmoat.config import DnsblSettings
from mailmoat.dns import Resolver
from mailmoat.dns.lists import DnsList, parse_list
from mailmoat.policy.base import Check, Client, HookResult, Slot, Verdict, plain_ip
from mailmoat.policy.results import ALLOWLISTED
from mailmoat.policy.score import Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply
from mailmoat.store.base import Store


@dataclass(slots=True)
class ListResult:
    score: int = 0
    hits: list[str] = field(default_factory=list)
    """Zones whose answer passed their filter (with the answer)."""
    unknown: list[str] = field(default_factory=list)
    """Zones that could not be asked."""
    unknown_weight: int = 0
    """Positive weight of the lists that could not be asked."""
    ttl: float = 0.0


LISTED: Slot[ListResult] = Slot("dnsbl")
"""The combined answer of the lists (read by this check only)."""


class DnsLists:
    def __init__(self, settings: DnsblSettings, resolver: Resolver, store: Store) -> None:
        self.s = settings
        self.lists = [parse_list(x) for x in settings.lists]
        self.resolver = resolver
        self.store = store

    async def _one(
        self, dl: DnsList, ip: IPv4Address | IPv6Address
    ) -> tuple[str, str | None, float]:
        """('hit' | 'miss' | 'unknown', answer, ttl)"""
        answer = await self.resolver.query(dl.query_name(ip), "A")
        if answer.temporary:
            return "unknown", None, 0.0
        for address in answer.records:
            if dl.matches(address):
                return "hit", address, answer.ttl
        return "miss", None, answer.ttl or self.s.cache_ttl

    async def lookup(self, ip: IPv4Address | IPv6Address) -> ListResult:
        ip = plain_ip(ip)
        key = f"dnsbl:{ip}"
        cached = await self.store.get(key)
        if cached is not None:
            data = json.loads(cached)
            return ListResult(score=data["score"], hits=data["hits"])
        found = await asyncio.gather(*(self._one(dl, ip) for dl in self.lists))
        result = ListResult(ttl=self.s.cache_ttl)
        for dl, (state, address, ttl) in zip(self.lists, found, strict=True):
            if state == "hit":
                result.score += dl.weight
                result.hits.append(f"{dl.zone}={address}")
            elif state == "unknown":
                result.unknown.append(dl.zone)
                result.unknown_weight += max(dl.weight, 0)
            result.ttl = min(result.ttl, ttl) if state != "unknown" else result.ttl
        if not result.unknown and result.ttl > 0:
            await self.store.set(
                key, json.dumps({"score": result.score, "hits": result.hits}), result.ttl
            )
        return result


class DnsblCheck(Check):
    name = "dnsbl"
    writes = (LISTED, ALLOWLISTED)

    def __init__(
        self, settings: DnsblSettings, resolver: Resolver, karma: Karma, store: Store
    ) -> None:
        self.s = settings
        self.lists = DnsLists(settings, resolver, store)
        self.karma = karma

    def connect(self, client: Client) -> Verdict:
        st = self.karma.state(client)
        if not st.exempt:
            st.start(LISTED, self.lists.lookup(client.ip))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt:
            return None
        done = st.client_outcomes.get(self.name)
        return done.verdict if done is not None else self._decide(st, client)

    async def _decide(self, st: SessionState, client: Client) -> Verdict:
        result: ListResult | None = await st.result(LISTED)
        if result is None:
            return None
        s = self.s
        listed = result.score >= s.threshold
        if result.score <= s.allowlist_threshold < 0:
            st.set(ALLOWLISTED, True)
            verdict = "allowed"
        elif listed or (s.action == "score" and result.score > 0):
            verdict = "listed"
        elif result.unknown and result.score + result.unknown_weight >= s.threshold:
            verdict = "temperror"
        else:
            verdict = "pass"
        reason = f"score {result.score}" + (f": {', '.join(result.hits)}" if result.hits else "")
        if result.unknown:
            reason += f"; not answered: {', '.join(result.unknown)}"
        if s.action == "score":
            failed, points = result.score > 0, max(result.score, 0)
        else:
            failed, points = listed, 0
        zones = ", ".join(h.split("=")[0] for h in result.hits)
        refusal = reply(
            554, "5.7.1", f"Service unavailable; client [{client.ip}] blocked using {zones}"
        )
        return apply(
            st,
            Outcome(self.name, verdict, reason),
            s.action,
            refusal,
            failed=failed,
            points=points,
            pending=result.unknown_weight
            if verdict == "temperror" or (s.action == "score" and result.unknown)
            else 0,
        )
