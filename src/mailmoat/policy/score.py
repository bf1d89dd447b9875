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

The state (`SessionState`) knows no check's result type: the checks leave their results in
typed `Slot`s (the shared ones and their types in `policy.results`), so this module imports
no check and no check imports another.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any, TypeVar

from mailmoat import logs
from mailmoat.config import Action, ScoreSettings
from mailmoat.headers import WANTED, Headers
from mailmoat.message import Message
from mailmoat.policy.base import Check, Client, Slot, Verdict
from mailmoat.policy.results import ALLOWLISTED
from mailmoat.smtp.events import MailFrom, RcptTo
from mailmoat.smtp.replies import Reply, reply

T = TypeVar("T")

HEADERS_WANTED = WANTED
"""The header fields the message checks read (`headers.WANTED`)."""

R_DNS_TEMP = reply(451, "4.4.3", "Temporary DNS failure, try again later")

PENDING: Any = object()
"""`SessionState.ready` for a slot whose work has not finished yet."""


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
    """What the DNS checks know of one session (on `Client.state`; made by `Karma.state`): the
    `Slot`s they fill, each a result or the task computing it, and their outcomes."""

    __slots__ = (
        "client",
        "client_outcomes",
        "done",
        "exempt",
        "ip_text",
        "sender",
        "tasks",
        "tx_outcomes",
    )

    def __init__(self, client: Client, exempt: bool = False) -> None:
        self.client = client
        self.exempt = exempt
        """In domains.relay_networks or score.exempt_networks: no DNS check runs."""
        self.tasks: dict[Slot[Any], asyncio.Task[Any]] = {}
        self.done: dict[Slot[Any], Any] = {}
        """Results that were ready at once (every answer cached, or set by a check that had
        it at hand): no task was needed."""
        self.client_outcomes: dict[str, Outcome] = {}
        self.tx_outcomes: dict[str, Outcome] = {}
        self.sender = ""
        self.ip_text = ip_text(client)

    def start(self, slot: Slot[T], work: Awaitable[T]) -> None:
        """Fill `slot` in the background (DNS lookups overlap the SMTP dialogue)."""
        self._drop(slot)
        task = asyncio.ensure_future(work)
        # a failure is reported where the result is awaited; never "never retrieved"
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self.tasks[slot] = task

    def set(self, slot: Slot[T], value: T) -> None:
        """A result computed at once (from cached answers), in place of `start`."""
        self._drop(slot)
        self.done[slot] = value

    def _drop(self, slot: Slot[Any]) -> None:
        self.done.pop(slot, None)
        old = self.tasks.pop(slot, None)
        if old is not None:
            old.cancel()

    def ready(self, slot: Slot[T]) -> T | None:
        """The result in `slot` if it is there already, else `PENDING` (then await `result`).
        None when nothing was started for `slot`, as `result` gives."""
        value = self.done.get(slot, PENDING)
        if value is not PENDING:
            return value  # type: ignore[no-any-return]
        task = self.tasks.get(slot)
        if task is None:
            return None
        if task.done() and not task.cancelled() and task.exception() is None:
            return task.result()  # type: ignore[no-any-return]
        return PENDING  # type: ignore[no-any-return]

    async def result(self, slot: Slot[T]) -> T | None:
        if slot in self.done:
            return self.done[slot]  # type: ignore[no-any-return]
        task = self.tasks.get(slot)
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
        for slot in [s for s in self.tasks if s.per_transaction]:
            self.tasks.pop(slot).cancel()
        for slot in [s for s in self.done if s.per_transaction]:
            del self.done[slot]
        self.tx_outcomes.clear()

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
    """The message's wanted header fields (`Message.headers_now`: scanned once per message,
    whatever checks run); None when the spool is on disk and not scanned yet (then await
    `message_headers`)."""
    return message.headers_now()


async def message_headers(st: SessionState, message: Message) -> Headers:
    return await message.read_headers()


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
    reads = (ALLOWLISTED,)

    def __init__(self, karma: Karma) -> None:
        self.karma = karma
        s = karma.s
        text = "Message refused: too many problems with this client or sender"
        self.refusal = (
            reply(550, "5.7.1", text) if s.action == "reject" else reply(450, "4.7.1", text)
        )

    def _judge(self, client: Client, stage: str) -> Verdict:
        st = self.karma.state(client)
        if st.exempt or st.ready(ALLOWLISTED):
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
                allowlisted=st.ready(ALLOWLISTED) or None,
                refused=str(verdict) if verdict is not None else None,
            )
        return verdict
