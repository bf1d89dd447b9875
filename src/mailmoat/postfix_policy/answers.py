"""A check's verdict as a policy action.

The service never answers `OK`: a verdict of ours can only refuse or defer, so Postfix's own
restrictions after `check_policy_service` still apply. A refusal is sent with its explicit
code, enhanced status and text (`550 5.1.1 ...`), as the gateway would say it; Postfix
disconnects after a 421 (a banned client). A failure of our own (a check that raised or ran
out of time) is `DEFER_IF_PERMIT`: a temporary failure unless Postfix refuses anyway.
"""

from __future__ import annotations

import re

from mailmoat.policy.base import Decision, Verdict
from mailmoat.smtp.replies import Reply, clean_text

# Postfix puts "<address>: Recipient address rejected: " (or the client's, sender's, HELO's)
# before the text of an action: the same words at the start of ours would be said twice.
_POSTFIX_SAYS = re.compile(
    r"^(Client host|Sender address|Recipient address|Helo command) rejected: "
)

DUNNO = "DUNNO"
DEFER_FAILURE = "DEFER_IF_PERMIT 4.3.0 Policy check failed, try again later"
DEFER_TIMEOUT = "DEFER_IF_PERMIT 4.4.3 Policy check timed out, try again later"


def refusal(verdict: Verdict) -> Reply | None:
    """The error reply in `verdict`, or None when it lets the request go on."""
    reply = verdict.reply if isinstance(verdict, Decision) else verdict
    if reply is None or reply.positive:
        return None
    return reply


def action(verdict: Verdict) -> str:
    """The action line for `verdict` (without `action=`)."""
    reply = refusal(verdict)
    if reply is None:
        return DUNNO
    status = f" {reply.enhanced}" if reply.enhanced else ""
    text = _POSTFIX_SAYS.sub("", clean_text(reply.text), count=1)
    return f"{reply.code}{status} {text or 'Rejected'}"
