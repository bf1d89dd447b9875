"""Sender domain check: the MAIL FROM domain must exist for mail, with an MX record or, without
one, an address (RFC 5321 section 5.1), as Postfix's `reject_unknown_sender_domain` asks. A
domain with neither cannot receive the replies and bounces the mail claims to want.

The lookup starts at MAIL; the verdict comes at the first RCPT of the transaction and holds for
its other recipients. The null sender (bounces) and an address literal are not checked.
"""

from __future__ import annotations

from pydantic import Field

from mailmoat.config.base import Action, Section
from mailmoat.config.sections import own_section
from mailmoat.dns import Resolver, Status
from mailmoat.policy.base import Check, Client, HookResult, Slot, Verdict
from mailmoat.policy.score import Karma, Outcome, SessionState, apply
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import reply

MAX_DOMAIN = 253
"""Octets of a domain name (RFC 1035 section 2.3.4): a longer one is not looked up."""


@own_section("sender_domain")
class SenderDomainSettings(Section):
    action: Action = Field(
        default="log",
        description="What a sender gets whose domain has neither an MX nor an address record.",
    )
    points: int = Field(default=2, ge=0, description="Session points for such a sender.")


R_UNKNOWN_DOMAIN = reply(550, "5.1.8", "Sender address rejected: domain not found")

SENDER_DOMAIN: Slot[str] = Slot("sender_domain", per_transaction=True)
"""pass, fail or temperror (read by this check only)."""


class SenderDomainCheck(Check):
    name = "sender_domain"
    writes = (SENDER_DOMAIN,)

    def __init__(self, settings: SenderDomainSettings, resolver: Resolver, karma: Karma) -> None:
        self.s, self.resolver, self.karma = settings, resolver, karma

    async def lookup(self, domain: str) -> str:
        """An MX record, else an address: "pass"; a temporary error: "temperror"; "fail"."""
        if len(domain) > MAX_DOMAIN:
            return "fail"
        mx = await self.resolver.query(domain, "MX")
        if mx.temporary:
            return "temperror"
        if mx.status is Status.OK:
            return "pass"
        if mx.status is Status.NXDOMAIN:
            return "fail"
        addresses = await self.resolver.addresses(domain)
        if addresses.temporary:
            return "temperror"
        return "pass" if addresses.records else "fail"

    def mail(self, client: Client, event: MailFrom) -> Verdict:
        st = self.karma.state(client)
        domain = event.address.rpartition("@")[2]
        if not st.exempt and domain and not domain.startswith("["):
            st.start(SENDER_DOMAIN, self.lookup(domain.lower().rstrip(".")))
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        st = self.karma.state(client)
        if st.exempt:
            return None
        done = st.tx_outcomes.get(self.name)  # every later RCPT gets the same answer
        return done.verdict if done is not None else self._decide(st)

    async def _decide(self, st: SessionState) -> Verdict:
        result = await st.result(SENDER_DOMAIN)
        if result is None:
            return None
        failed = result == "fail"
        return apply(
            st,
            Outcome(self.name, result, "no MX or address record" if failed else ""),
            self.s.action,
            R_UNKNOWN_DOMAIN,
            failed=failed,
            points=self.s.points,
            per_transaction=True,
        )
