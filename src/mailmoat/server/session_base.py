"""What every part of a session shares: its state (one slotted object per connection) and the
plain mechanics of writing and closing. The parts (`deadlines`, `refusals`, `transaction`,
`tls`) extend this base; `session.SmtpSession` puts them together with the engine driver."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from mailmoat.message import Spool
from mailmoat.policy.base import Client, Verdict
from mailmoat.server.host import Host, HostState
from mailmoat.server.received import new_queue_id
from mailmoat.smtp.connection import ServerConnection
from mailmoat.smtp.envelope import Envelope
from mailmoat.smtp.events import Command, Rejected
from mailmoat.smtp.replies import Reply


class SessionBase(asyncio.Protocol):
    __slots__ = (
        "_close_due",
        "_close_reason",
        "_cmd_started",
        "_data_bytes",
        "_delivering",
        "_greeting",
        "_hold",
        "_last_byte",
        "_lost",
        "_pre_greeted",
        "_reading_paused",
        "_started",
        "_stopping",
        "_task",
        "_timer",
        "_timer_at",
        "_tx_started",
        "_waiting_since",
        "_writing_paused",
        "client",
        "conn",
        "envelope",
        "host",
        "queue_id",
        "session_id",
        "spool",
        "state",
        "transactions",
        "transport",
    )

    def __init__(
        self,
        host: Host,
        client: Client,
        verdict: Verdict = None,
        greeted: bool = False,
        state: HostState | None = None,
    ) -> None:
        """`client` passed admission (the host ran the connect stage on the bare socket);
        `verdict` is what that stage said: go on, or hold the greeting (a Decision's delay);
        `greeted`: the listener wrote the 220 on the bare socket already; `state`: what the
        session runs under to its end (the host's current one unless given), a reload does
        not change a session in flight."""
        self.host = host
        self.state = state or host.state
        self._pre_greeted = greeted
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection  # made in connection_made
        self.spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._delivering = False  # the message is with delivery: a lost client does not stop it
        self._lost: tuple[Exception | None] | None = None  # connection lost while work ran
        self._stopping = False  # the server stops: close once the work in flight has answered
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0  # when _timer fires
        self._hold: asyncio.TimerHandle | None = None  # a delay: greeting or reply held back
        self._greeting: Verdict = verdict  # the connect stage's, until the greeting
        self._reading_paused = False
        self._writing_paused = False
        self._close_reason = "quit"
        self._close_due = False  # waited for its place in the close queue already
        self._started = 0.0
        self._waiting_since = 0.0  # when the current wait for the client began
        self._last_byte = 0.0
        self._data_bytes = 0  # bytes received since DATA was accepted
        self._cmd_started = 0.0  # when the command being checked arrived
        self._tx_started = 0.0
        self.transactions = 0
        self.queue_id = ""
        self.session_id = new_queue_id()  # names the connection in every log line about it
        self.envelope: Envelope | None = None  # kept past the engine's reset, for the log

    # ------------------------------------------------------------- mechanics
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _close(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    # ------------------------------------------------- provided by the parts
    def _flush(self) -> None:
        """Write the queued replies (`deadlines`: a new wait for the client starts)."""
        raise NotImplementedError

    def _pump(self) -> None:
        """Handle the engine's ready events (`session`)."""
        raise NotImplementedError

    def _rearm_timer(self) -> None:
        """The client's clock runs again from now (`deadlines`)."""
        raise NotImplementedError

    def _refused(self, answer: Reply, ev: Command, reason: str = "") -> Awaitable[None] | None:
        """A command was refused (`refusals`)."""
        raise NotImplementedError

    def _log_refusal(self, ev: Rejected, rcpt: str | None, sender: str | None = None) -> None:
        """Count and log a refusal, nothing more (`refusals`)."""
        raise NotImplementedError
