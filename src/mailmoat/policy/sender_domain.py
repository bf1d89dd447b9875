"""The sender's domain exists for mail (as Postfix's reject_unknown_sender_domain): the domain
of MAIL FROM has an MX record or, failing that, an address record (RFC 5321 5.1).

The lookups start at MAIL FROM and run while the client sends its recipients; the verdict is
applied at the first RCPT. The null sender is not checked. Results: pass, fail (no MX and no
address), temperror.
"""

from __future__ import annotations

from mailmoat.config import SenderDomainSettings
from mailmoat.dns import Resolver, Status
from mailmoat.policy.base import Check, Client, HookResult, Slot, Verdict
from mailmoat.policy.score import Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import reply

R_UNKNOWN_DOMAIN = reply(550, "5.1.8", "Sender address rejected: domain not found")

SENDER_DOMAIN: Slot[str] = Slot("sender_domain", per_transaction=True)
"""pass, fail or temperror (read by this check only)."""


class SenderDomainCheck(Check):
    name = "sender_domain"
    writes = (SENDER_DOMAIN,)

    def __init__(self, settings: SenderDomainSettings, resolver: Resolver, karma: Karma) -> None:
        self.s = settings
        self.resolver = resolver
        self.karma = karma

    async def _lookup(self, domain: str) -> str:
        mx = await self.resolver.query(domain, "MX")
        if mx.status is Status.OK and mx.records:
            return "pass"
        address = await self.resolver.addresses(domain)
        if address.status is Status.OK and address.records:
            return "pass"
        return "temperror" if mx.temporary or address.temporary else "fail"

    def mail(self, client: Client, event: MailFrom) -> Verdict:
        st = self.karma.state(client)
        if not st.exempt and "@" in event.address:
            st.start(SENDER_DOMAIN, self._lookup(event.address.rsplit("@", 1)[1]))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt:
            return None
        done = st.tx_outcomes.get(self.name)
        return done.verdict if done is not None else self._decide(st)

    async def _decide(self, st: SessionState) -> Verdict:
        result = await st.result(SENDER_DOMAIN)
        if result is None:
            return None
        return apply(
            st,
            Outcome(self.name, result),
            self.s.action,
            R_UNKNOWN_DOMAIN,
            failed=result == "fail",
            points=self.s.points,
            per_transaction=True,
        )
