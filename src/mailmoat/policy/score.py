"""The session score (in the spirit of Haraka's karma, counting against the client) and the
state the DNS checks share during a session.

Every DNS check (dnsbl, fcrdns, helo, spf, dkim, dmarc) turns its result into an `Outcome` and
applies its configured action:

* ``off``: the check does not run (DMARC still has SPF and DKIM evaluated when it needs them);
* ``log``: the result is logged and reported in Authentication-Results, nothing else;
* ``score``: a failure adds the check's points to the session score;
* ``tempfail`` / ``reject``: a failure is refused with 4xx / 5xx at once.

A temporary DNS error is never a pass where it could matter: under ``tempfail`` or ``reject`` it
answers 4xx; under ``score`` its points are held as *pending*, and when the score plus the
pending points would reach the threshold, the client gets 4xx instead of an accept.

`ScoreStart` (first) keeps the per-session state; `ScoreGate` (last) refuses at RCPT and at the
end of data once the score reaches `score.threshold`. Client points (dnsbl, fcrdns, helo) last
the session; sender points (spf, dkim, dmarc) one transaction.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import TYPE_CHECKING, Any, TypeVar

from mailmoat import logs
from mailmoat.config import Action, ScoreSettings
from mailmoat.headers import Headers, scan
from mailmoat.message import Message, in_thread
from mailmoat.policy.base import Check, Client, Verdict
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import Reply, reply

if TYPE_CHECKING:
    from mailmoat.policy.dkim import DkimResult
    from mailmoat.policy.dmarc import DmarcResult
    from mailmoat.policy.fcrdns import Iprev

T = TypeVar("T")

HEADERS_WANTED = ("from", "authentication-results", "dkim-signature")
"""The header fields the message checks read: From (DMARC), Authentication-Results (forged
ones removed), DKIM-Signature (none: no DKIM work at all)."""
SCAN_CHUNK = 8192
"""Read at a time for the scan: most header blocks fit, and the body is not read."""

R_DNS_TEMP = reply(451, "4.4.3", "Temporary DNS failure, try again later")

PENDING: Any = object()
"""`SessionState.ready` for work that has not finished yet."""


@dataclass(slots=True)
class Outcome:
    """One check's result for the session or the transaction."""

    check: str
    result: str
    """pass, fail, softfail, neutral, none, temperror, permerror, listed, allowed, ..."""
    reason: str = ""
    points: int = 0
    """Points added to the score."""
    pending: int = 0
    """Points it would have added had the DNS answered."""
    verdict: Verdict = None
    """The check's own refusal (tempfail/reject), repeated for every later RCPT."""

    def describe(self) -> str:
        return f"{self.check} {self.result}" + (f" ({self.reason})" if self.reason else "")


class SessionState:
    """What the DNS checks know of one session (on `Client.state`; made by `Karma.state`)."""

    __slots__ = (
        "allowlisted",
        "client",
        "client_outcomes",
        "dkim",
        "dmarc",
        "done",
        "exempt",
        "headers",
        "ip_text",
        "iprev",
        "sender",
        "tasks",
        "tx_outcomes",
    )

    def __init__(self, client: Client, exempt: bool = False) -> None:
        self.client = client
        self.exempt = exempt
        """In domains.relay_networks or score.exempt_networks: no DNS check runs."""
        self.allowlisted = False
        """The DNS allow lists vouch for the client: no FCrDNS or HELO check, no score
        refusal."""
        self.tasks: dict[str, asyncio.Task[Any]] = {}
        self.done: dict[str, Any] = {}
        """Results that were ready at once (every answer cached): no task was needed."""
        self.client_outcomes: dict[str, Outcome] = {}
        self.tx_outcomes: dict[str, Outcome] = {}
        self.sender = ""
        self.ip_text = ip_text(client)
        self.iprev: Iprev | None = None
        """The FCrDNS result, for the Authentication-Results header (the session's)."""
        # the transaction's message results, for the later checks
        self.headers: Headers | None = None
        self.dkim: list[DkimResult] | None = None
        self.dmarc: DmarcResult | None = None

    def start(self, key: str, work: Awaitable[T]) -> None:
        """Run `work` in the background (DNS lookups overlap the SMTP dialogue)."""
        self._drop(key)
        task = asyncio.ensure_future(work)
        # a failure is reported where the result is awaited; never "never retrieved"
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.tasks[key] = task

    def set(self, key: str, value: Any) -> None:
        """A result computed at once (from cached answers), in place of `start`."""
        self._drop(key)
        self.done[key] = value

    def _drop(self, key: str) -> None:
        self.done.pop(key, None)
        old = self.tasks.pop(key, None)
        if old is not None:
            old.cancel()

    def ready(self, key: str) -> Any:
        """The result of `key` if it is there already, else `PENDING` (then await `result`).
        None when nothing was started for `key`, as `result` gives."""
        if key in self.done:
            return self.done[key]
        task = self.tasks.get(key)
        if task is None:
            return None
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()
        return PENDING

    async def result(self, key: str) -> Any:
        if key in self.done:
            return self.done[key]
        task = self.tasks.get(key)
        return None if task is None else await asyncio.shield(task)

    def outcomes(self) -> list[Outcome]:
        return [*self.client_outcomes.values(), *self.tx_outcomes.values()]

    def totals(self) -> tuple[int, int]:
        """(score, pending points) of the session so far."""
        points = pending = 0
        for outcomes in (self.client_outcomes, self.tx_outcomes):
            for o in outcomes.values():
                points += o.points
                pending += o.pending
        return points, pending

    def new_transaction(self) -> None:
        for key in [k for k in self.tasks if k.startswith("tx:")]:
            self.tasks.pop(key).cancel()
        for key in [k for k in self.done if k.startswith("tx:")]:
            del self.done[key]
        self.tx_outcomes.clear()
        self.headers = self.dkim = self.dmarc = None

    def close(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        self.tasks.clear()
        self.done.clear()


def ip_text(client: Client) -> str:
    """`str(client.ip)`, without formatting the address again when the client's text is that
    already (an IPv4 address parses from its one canonical form only)."""
    address = client.address
    if client.ip.version == 4 and ":" not in address and "%" not in address:
        return address
    return str(client.ip)


def headers_now(st: SessionState, message: Message) -> Headers | None:
    """The message's wanted header fields, scanned once per message; None when the spool is
    on disk and not scanned yet (then await `message_headers`)."""
    headers = st.headers
    if headers is None and message.spool.in_memory:
        headers = st.headers = scan(message.spool.chunks(SCAN_CHUNK), HEADERS_WANTED)
    return headers


async def message_headers(st: SessionState, message: Message) -> Headers:
    headers = headers_now(st, message)
    if headers is None:  # a spool on disk is read in a worker thread, as the relay does
        chunks = message.spool.chunks(SCAN_CHUNK)
        headers = await in_thread(scan, chunks, HEADERS_WANTED)
        st.headers = headers
    return headers


class Karma:
    """The per-session states of all DNS checks (each on its `Client`)."""

    def __init__(self, settings: ScoreSettings, trusted_networks: Sequence[str] = ()) -> None:
        self.s = settings
        self.exempt_nets = tuple(
            ip_network(n, strict=False) for n in [*settings.exempt_networks, *trusted_networks]
        )

    def state(self, client: Client) -> SessionState:
        st = client.state
        if type(st) is not SessionState:
            st = client.state = SessionState(client, any(client.ip in n for n in self.exempt_nets))
        return st

    def end(self, client: Client) -> None:
        st = client.state
        if isinstance(st, SessionState):
            client.state = None
            st.close()


def apply(
    st: SessionState,
    outcome: Outcome,
    action: Action,
    refusal: Reply,
    *,
    failed: bool,
    points: int = 0,
    pending: int = 0,
    per_transaction: bool = False,
) -> Verdict:
    """Record `outcome` under `action`, log it, and return the check's own verdict.

    `failed`: the result is a failure the action applies to (worth `points` under score).
    `pending`: points a temporary DNS error withheld. A "temperror" outcome, or any `pending`,
    answers 4xx under tempfail/reject (unless the check failed anyway) and is held pending
    under score.
    """
    temporary = outcome.result == "temperror" or pending > 0
    if action == "score":
        outcome.points = points if failed else 0
        outcome.pending = (pending or points) if temporary and not failed else pending
    elif action in ("tempfail", "reject"):
        if failed:
            outcome.verdict = refusal if action == "reject" else _temporary(refusal)
        elif temporary:
            outcome.verdict = R_DNS_TEMP
    (st.tx_outcomes if per_transaction else st.client_outcomes)[outcome.check] = outcome
    level = logging.INFO if failed or temporary else logging.DEBUG
    if not logs.log.isEnabledFor(level):
        return outcome.verdict
    logs.event(
        "check",
        level,
        check=outcome.check,
        client=st.client.address,
        result=outcome.result,
        reason=outcome.reason or None,
        action=action,
        points=outcome.points or None,
        pending=outcome.pending or None,
        reply=str(outcome.verdict) if outcome.verdict is not None else None,
    )
    return outcome.verdict


def _temporary(refusal: Reply) -> Reply:
    enhanced = "4" + refusal.enhanced[1:] if refusal.enhanced else None
    return Reply(450 if refusal.code == 550 else 451, enhanced, refusal.lines)


class ScoreStart(Check):
    """First of the DNS checks: per-session state, a fresh transaction at MAIL, clean-up."""

    name = "score_start"

    def __init__(self, karma: Karma) -> None:
        self.karma = karma

    def connect(self, client: Client) -> Verdict:
        self.karma.state(client)
        return None

    def mail(self, client: Client, event: MailFrom) -> Verdict:
        st = self.karma.state(client)
        st.new_transaction()
        st.sender = event.address
        return None

    def disconnect(self, client: Client) -> None:
        self.karma.end(client)


class ScoreGate(Check):
    """Last of the DNS checks: refuses once the session score reaches the threshold."""

    name = "score"

    def __init__(self, karma: Karma) -> None:
        self.karma = karma
        s = karma.s
        text = "Message refused: too many problems with this client or sender"
        self.refusal = (
            reply(550, "5.7.1", text) if s.action == "reject" else reply(450, "4.7.1", text)
        )

    def _judge(self, client: Client, stage: str) -> Verdict:
        st = self.karma.state(client)
        if st.exempt or st.allowlisted:
            return None
        score, pending = st.totals()
        threshold = self.karma.s.threshold
        if score >= threshold:
            verdict: Reply = self.refusal
        elif score + pending >= threshold:
            verdict = R_DNS_TEMP
        else:
            return None
        reasons = [o.describe() for o in st.outcomes() if o.points or o.pending]
        logs.event(
            "score",
            logging.INFO,
            client=client.address,
            stage=stage,
            score=score,
            pending=pending or None,
            threshold=threshold,
            reasons=reasons,
            reply=str(verdict),
        )
        return verdict

    def rcpt(self, client: Client, event: RcptTo) -> Verdict:
        return self._judge(client, "rcpt")

    def message(self, client: Client, message: Any) -> Verdict:
        verdict = self._judge(client, "message")
        st = self.karma.state(client)
        if not st.exempt and logs.log.isEnabledFor(logging.INFO):
            # one line per message with every check's result, whatever the verdict
            logs.event(
                "checks",
                queue_id=getattr(message, "queue_id", None),
                client=client.address,
                results=[
                    f"{o.check}={o.result.replace(' ', ':')}"
                    + (f"+{o.points}" if o.points else "")
                    + (f"?{o.pending}" if o.pending else "")
                    for o in st.outcomes()
                ],
                score=st.totals()[0],
                allowlisted=st.allowlisted or None,
                refused=str(verdict) if verdict is not None else None,
            )
        return verdict
