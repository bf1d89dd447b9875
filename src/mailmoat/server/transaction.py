"""The end of a mail transaction: the message checks, delivery, and the transaction's log line.

Invariant 1 lives here: the client gets 250 only once delivery said the message is accepted;
every other outcome is the reply delivery or a check gave.
"""

from __future__ import annotations

import asyncio
import inspect
import time

from mailmoat import logs
from mailmoat.message import Message
from mailmoat.policy.base import Decision, HookResult
from mailmoat.server.hold import DELIVERED
from mailmoat.server.received import received_header
from mailmoat.server.session_base import SessionBase
from mailmoat.smtp.events import MessageEnd, Rejected
from mailmoat.smtp.replies import Reply, reply

_DELIVERY = {
    (True, False): "messages.delivered",
    (False, True): "delivery.deferred",
    (False, False): "delivery.refused",
}
"""The delivery's outcome (accepted, transient reply) as counted: stored or taken by the
downstream; or not, for now or for good (the checks' refusals are not in these)."""


def addressed(recipients: list[str], local_domains: list[str]) -> list[str]:
    """The recipients with the bare <Postmaster> (RFC 5321 4.5.1: accepted without a domain)
    as postmaster@ the first local domain: an internal server given a domainless address
    appends its own name (Postfix: $myorigin) and may route it elsewhere."""
    if not local_domains or all("@" in r for r in recipients):
        return recipients
    postmaster = f"postmaster@{local_domains[0]}"
    if postmaster in recipients:  # named twice: once is enough
        return [r for r in recipients if "@" in r]
    return [r if "@" in r else postmaster for r in recipients]


class Transactions(SessionBase):
    """The session's end-of-data part (a part of `SmtpSession`)."""

    __slots__ = ()

    async def _deliver(self) -> None:
        """End of DATA: a header block that parsers read differently is refused (554 5.6.0,
        `headers.Headers.defect`), so the checks and the internal server see the same fields,
        and one longer than smtp.max_header_size (552 5.3.4); then the checks, then delivery."""
        envelope = self.conn.envelope
        assert envelope is not None and self.spool is not None
        envelope.rcpt_to = addressed(envelope.rcpt_to, self.state.settings.domains.local)
        trace = received_header(self.conn, self.client, self.queue_id)
        limit = self.state.settings.smtp.max_header_size
        message = Message(envelope, self.spool, self.queue_id, trace, max_header=limit)
        try:
            headers = message.headers_now()
            if headers is None:
                headers = await message.read_headers()
            verdict: HookResult
            if headers.too_big:
                verdict = Decision(
                    reply(552, "5.3.4", f"Message rejected: {headers.defect}"),
                    reason="header_too_big",
                )
            elif headers.defect:  # the checks and the internal server would read other fields
                verdict = Decision(
                    reply(554, "5.6.0", f"Message rejected: {headers.defect}"),
                    reason="header_defect",
                )
            else:
                verdict = self.state.pipeline.run("message", self.client, message)
            if verdict is not None and inspect.isawaitable(verdict):
                verdict = await verdict
            if isinstance(verdict, Decision) and verdict.delay:
                await asyncio.sleep(verdict.delay)
            refusal = verdict.reply if isinstance(verdict, Decision) else verdict
            if refusal is not None:
                close = isinstance(verdict, Decision) and verdict.close
                self.conn.send(refusal, close=close)
                self._count_message(refusal, message)
                self._log_transaction(refusal, None, message)
                reason = verdict.reason if isinstance(verdict, Decision) else ""
                more = self._refused(refusal, MessageEnd(message.size), reason)
                if more is not None:
                    await more
                return
            self._delivering = True
            result = await self.state.delivery.deliver(message)
        finally:
            self._delivering = False
            self._drop_spool()
        self.conn.send(result.reply)
        self._count_message(result.reply, message)
        self.host.stats.incr(_DELIVERY[result.accepted, result.reply.transient])
        if not result.accepted:  # logged as every refusal; no strike: not the client's doing
            self._log_refusal(Rejected("delivery", result.reply, "END-OF-DATA"), None)
        if result.accepted:
            self.transactions += 1
            if self.transactions == 1:
                self.client.tag(DELIVERED)  # the supervisor holds it no more (server/hold.py)
        self._log_transaction(result.reply, result.detail, message)

    def _count_message(self, answer: Reply, message: Message) -> None:
        """The end of data answered: its outcome, its size and how long the checks and the
        delivery took."""
        stats = self.host.stats
        stats.histogram("latency.message").observe(time.monotonic() - self._cmd_started)
        if answer.positive:
            stats.incr("messages.accepted")
            stats.incr("messages.bytes", message.size)
        else:
            stats.incr("messages.deferred" if answer.transient else "messages.refused")

    def _log_transaction(
        self, outcome: str | Reply, downstream: str | None, message: Message | None = None
    ) -> None:
        """`outcome`: the reply the client got, or why the message was dropped."""
        envelope = self.envelope
        self.host.stats.transaction(
            self.client.address,
            envelope.mail_from if envelope else None,
            envelope.rcpt_to if envelope else [],
            message.size if message else None,
            str(outcome),
        )
        if not logs.enabled():
            return
        logs.event(
            "transaction",
            session=self.session_id,
            queue_id=self.queue_id,
            client=self.client.address,
            helo=self.conn.helo,
            sender=f"<{envelope.mail_from}>" if envelope else None,
            recipients=[f"<{r}>" for r in envelope.rcpt_to] if envelope else None,
            size=message.size if message else None,
            result=str(outcome),
            downstream=downstream,
            duration=time.monotonic() - self._tx_started,
        )
