"""HELO/EHLO name checks. A sending server names itself with its fully qualified domain name
or, without one, with an address literal of its own address (RFC 5321 section 4.1.4). Checked:

* invalid: neither a fully qualified domain name (two or more LDH labels, a top label that is
  not all digits) nor a valid address literal;
* mismatch: an address literal that is not the client's address;
* forged: the name claims to be us (server.hostname, a local domain, an address we listen on);
* unresolvable: the name has no A or AAAA record (NXDOMAIN or no data).

The lookup starts when the HELO arrives (a cached answer gives the result at once, kept per
name until the answer expires, at most `dns.cache_size` names); the verdict is applied at the
first RCPT. Points add
up over the sub-checks that failed; a lookup that failed temporarily holds its points pending.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address

from mailmoat.config import HeloSettings
from mailmoat.dns import Answer, Resolver
from mailmoat.dns.cache import TtlCache
from mailmoat.policy.base import Check, Client, HookResult, Slot, Verdict, plain_ip
from mailmoat.policy.results import ALLOWLISTED
from mailmoat.policy.score import PENDING, Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import Helo, RcptTo
from mailmoat.smtp.replies import reply

_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")

R_HELO = reply(550, "5.7.1", "Helo command rejected: bad or forged host name")


@dataclass(slots=True)
class HeloResult:
    failures: list[str] = field(default_factory=list)
    """Sub-checks that failed: invalid, mismatch, forged, unresolvable."""
    temporary: bool = False
    reason: str = ""


HELO: Slot[HeloResult] = Slot("helo")
"""The HELO name's result (read by this check only)."""


def literal_address(name: str) -> IPv4Address | IPv6Address | None:
    """The address of "[192.0.2.1]" or "[IPv6:2001:db8::1]"; None when invalid."""
    inner = name[1:-1]
    if inner[:5].lower() == "ipv6:":
        try:
            ip = ip_address(inner[5:])
        except ValueError:
            return None
        return ip if ip.version == 6 else None
    try:
        ip = ip_address(inner)
    except ValueError:
        return None
    return ip if ip.version == 4 else None


def is_fqdn(name: str) -> bool:
    labels = name.lower().rstrip(".").split(".")
    if len(labels) < 2 or len(name) > 253:
        return False
    if labels[-1].isdigit():
        return False  # a bare IPv4 address, or a numeric top label
    return all(_LABEL.match(label) for label in labels)


class HeloCheck(Check):
    name = "helo"
    writes = (HELO,)
    reads = (ALLOWLISTED,)

    def __init__(
        self,
        settings: HeloSettings,
        resolver: Resolver,
        karma: Karma,
        our_names: Iterable[str],
        our_addresses: Iterable[str] = (),
    ) -> None:
        self.s = settings
        self.resolver = resolver
        self.karma = karma
        self.our_names = frozenset(n.lower().rstrip(".") for n in our_names)
        self.our_addresses = frozenset(ip_address(a) for a in our_addresses)
        self.results: TtlCache[str, HeloResult] = TtlCache(resolver.s.cache_size, resolver.clock)
        """Results of names that needed a lookup (they depend on the name alone), computed from
        cached answers, until the answer expires; read, never changed."""
        self.points_of = {
            "invalid": settings.invalid_points,
            "mismatch": settings.mismatch_points,
            "forged": settings.forged_points,
            "unresolvable": settings.unresolvable_points,
        }

    def _without_dns(self, name: str, client_ip: IPv4Address | IPv6Address) -> HeloResult | None:
        """The result of the checks that need no lookup when they decide, else None."""
        result = HeloResult()
        client_ip = plain_ip(client_ip)
        if name.startswith("[") and name.endswith("]"):
            ip = literal_address(name)
            if ip is None:
                result.failures.append("invalid")
                result.reason = f"{name} is not a valid address literal"
            elif ip != client_ip:
                failure = "forged" if ip in self.our_addresses else "mismatch"
                result.failures.append(failure)
                result.reason = f"{name} is not the client's address {client_ip}"
            return result
        if name.lower().rstrip(".") in self.our_names:
            result.failures.append("forged")
            result.reason = f"{name} is our own name"
            return result
        if not is_fqdn(name):
            result.failures.append("invalid")
            result.reason = f"{name} is not a fully qualified domain name"
            return result
        return None

    @staticmethod
    def _resolved(name: str, answer: Answer) -> HeloResult:
        result = HeloResult()
        if answer.temporary:
            result.temporary = True
            result.reason = f"{name}: {answer.error}"
        elif not answer.records:
            result.failures.append("unresolvable")
            result.reason = f"{name} has no address"
        return result

    async def evaluate(self, name: str, client_ip: IPv4Address | IPv6Address) -> HeloResult:
        result = self._without_dns(name, client_ip)
        if result is not None:
            return result
        return self._resolved(name, await self.resolver.addresses(name.lower().rstrip(".")))

    def evaluate_now(self, name: str, client_ip: IPv4Address | IPv6Address) -> HeloResult | None:
        """`evaluate` without waiting: None when the lookup it needs is not cached."""
        result = self.results.get(name)
        if result is not None:
            return result
        result = self._without_dns(name, client_ip)
        if result is not None:
            return result
        answer = self.resolver.cached_addresses(name.lower().rstrip("."))
        if answer is None:
            return None
        result = self._resolved(name, answer)
        self.results.put(name, result, answer.expires)
        return result

    def helo(self, client: Client, event: Helo) -> Verdict:
        st = self.karma.state(client)
        if not st.exempt:
            st.client_outcomes.pop(self.name, None)
            now = self.evaluate_now(event.name, client.ip)
            if now is not None:
                st.set(HELO, now)
            else:
                st.start(HELO, self.evaluate(event.name, client.ip))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt or st.ready(ALLOWLISTED):
            return None
        done = st.client_outcomes.get(self.name)
        if done is not None:
            return done.verdict
        result = st.ready(HELO)
        return self._decide(st) if result is PENDING else self._apply(st, result)

    async def _decide(self, st: SessionState) -> Verdict:
        return self._apply(st, await st.result(HELO))

    def _apply(self, st: SessionState, result: HeloResult | None) -> Verdict:
        if result is None:
            return None
        points = sum(self.points_of[f] for f in result.failures)
        if result.failures:
            verdict = "fail " + "+".join(result.failures)
        else:
            verdict = "temperror" if result.temporary else "pass"
        return apply(
            st,
            Outcome(self.name, verdict, result.reason),
            self.s.action,
            R_HELO,
            failed=bool(result.failures),
            points=points,
            pending=self.s.unresolvable_points if result.temporary else 0,
        )
