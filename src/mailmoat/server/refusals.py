"""What follows a refusal in a session: the counter, the log line (issue 13 item 1) and the
`rejected` stage, whose checks may close the session or hold the next reply (tarpit, strikes)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable

from mailmoat import logs
from mailmoat.policy.base import Decision, Verdict
from mailmoat.server.proxied import PROXY_LOCAL
from mailmoat.server.session_base import SessionBase
from mailmoat.smtp.events import (
    Command,
    DataStart,
    Expn,
    MailFrom,
    MessageEnd,
    RcptTo,
    Rejected,
    Vrfy,
)
from mailmoat.smtp.replies import Reply, reply

R_CLOSING = reply(421, "4.7.0", "Closing connection")

_VERBS: dict[type, str] = {
    MailFrom: "MAIL",
    RcptTo: "RCPT",
    DataStart: "DATA",
    MessageEnd: "END-OF-DATA",
    Vrfy: "VRFY",
    Expn: "EXPN",
}
"""The command a refused event stands for, as logged (HELO/EHLO is the engine's own)."""
_AT_DATA = ("DATA", "END-OF-DATA")


class Refusals(SessionBase):
    """The session's refusals (a part of `SmtpSession`)."""

    __slots__ = ()

    def _refused(self, answer: Reply, ev: Command, reason: str = "") -> Awaitable[None] | None:
        """A check (or the session) refused a command: the `rejected` stage sees it too;
        `reason` names the check (the counter is `rejected.<reason>`)."""
        if answer.positive:
            return None
        if self.conn.closing:
            self._close_reason = "policy"
        verb = _VERBS.get(type(ev)) or ("EHLO" if getattr(ev, "extended", False) else "HELO")
        rcpt = ev.address if type(ev) is RcptTo else None
        sender = ev.address if type(ev) is MailFrom else None
        return self._rejected(Rejected(reason or "policy", answer, verb), rcpt, sender)

    def _rejected(
        self, ev: Rejected, rcpt: str | None = None, sender: str | None = None
    ) -> Awaitable[None] | None:
        """The client got an error reply: log and count it, and let the checks react
        (tarpit, strikes). `rcpt`, `sender`: the address a RCPT or MAIL refusal names."""
        self.client.errors = self.conn.errors
        self.host.stats.offender(self.client.address)
        self._log_refusal(ev, rcpt, sender)
        if self.client.has(PROXY_LOCAL):  # the proxy's health check: no strikes, no tarpit
            return None
        verdict = self.state.pipeline.run("rejected", self.client, ev)
        if verdict is not None and inspect.isawaitable(verdict):
            return self._rejected_later(verdict)
        self._after_rejected(verdict)
        return None

    def _log_refusal(self, ev: Rejected, rcpt: str | None, sender: str | None = None) -> None:
        """Count the refusal by its reason and log it: at the end of data with the message's
        envelope, all its recipients (the engine has already reset its own)."""
        self.host.stats.incr(f"rejected.{ev.reason}")
        if not logs.enabled():
            return
        envelope = self.conn.envelope
        if envelope is None and ev.command in _AT_DATA:
            envelope = self.envelope
        if sender is None and envelope is not None:
            sender = envelope.mail_from
        if rcpt is not None:
            rcpt = f"<{rcpt}>"
        elif envelope is not None and ev.command in _AT_DATA:
            rcpt = ",".join(f"<{r}>" for r in envelope.rcpt_to)
        logs.event(
            "refused",
            session=self.session_id,
            client=self.client.address,
            helo=self.conn.helo,
            sender=f"<{sender}>" if sender is not None else None,
            rcpt=rcpt,
            command=ev.command or None,
            code=ev.reply.code,
            status=ev.reply.enhanced,
            reason=ev.reason,
            reply=ev.reply.text,
        )

    async def _rejected_later(self, pending: Awaitable[Verdict]) -> None:
        self._after_rejected(await pending)

    def _after_rejected(self, verdict: Verdict) -> None:
        if not isinstance(verdict, Decision) or self.transport is None:
            return
        conn = self.conn
        if verdict.close or verdict.reply is not None:
            self._flush()
            self._write((verdict.reply or R_CLOSING).to_bytes())
            self._close("policy")
        elif verdict.delay and not conn.closing:
            self.host.stats.incr("tarpit.delayed")
            self._hold = self.host.loop.call_later(verdict.delay, self._release)

    def _release(self) -> None:
        """A tarpit delay is over: send what was held and go on."""
        self._hold = None
        if self.transport is None:
            return
        self._flush()
        if self._task is None:
            self._pump()
        self._rearm_timer()
