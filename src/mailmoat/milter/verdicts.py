"""What a milter refusal says to the MTA: a check's verdict as the reply, or none."""

from __future__ import annotations

from mailmoat.policy.base import Decision, Verdict
from mailmoat.server.refusals import R_CLOSING
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import Reply


def refusal_of(verdict: Verdict) -> Reply | None:
    if isinstance(verdict, Decision):
        if verdict.reply is not None:
            return verdict.reply if not verdict.reply.positive else None
        return R_CLOSING if verdict.close else None
    if verdict is not None and not verdict.positive:
        return verdict
    return None


def rejected_event(reason: str, answer: Reply, verb: str) -> Rejected:
    return Rejected(reason or "policy", answer, verb)
