"""One client connection: an asyncio.Protocol that drives the engine and the policy pipeline.

The session owns no SMTP syntax (the engine does) and decides no policy (the checks do). It
moves bytes, keeps time, holds the spool, hands finished messages to delivery, and applies
backpressure: reading pauses while unparsed input piles up (a reply is pending, for example
while the downstream server is slow) or while the client does not read our replies.

Idle sessions hold no task: work runs synchronously inside `data_received` and a task exists
only while a hook or a delivery really waits. A delay (a held greeting, a tarpitted reply) is a
timer, not a task. A session exists only for a client that admission let in: the gateway's
listener runs the connect stage on the bare socket and refuses without making one.

The session runs under the host's state as it was when it started (`host.HostState`): a reload
changes what new sessions see, never a session in flight. Its deadlines are in `deadlines`,
the end of a transaction (checks, delivery, log line) in `transaction`, STARTTLS in `tls`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable
from typing import cast

from mailmoat import logs
from mailmoat.policy.base import Decision, Verdict
from mailmoat.relay.capabilities import offered_limits
from mailmoat.server.deadlines import Deadlines
from mailmoat.server.hold import LEFT_SILENT
from mailmoat.server.proxied import PROXY_LOCAL
from mailmoat.server.received import new_queue_id
from mailmoat.server.refusals import R_CLOSING, Refusals
from mailmoat.server.tls import TlsUpgrade
from mailmoat.server.transaction import Transactions
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, ServerConnection
from mailmoat.smtp.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    DataStart,
    Event,
    Expn,
    Helo,
    Help,
    MailFrom,
    MessageAborted,
    MessageEnd,
    Noop,
    Quit,
    RcptTo,
    Rejected,
    Rset,
    StartTls,
    Vrfy,
)
from mailmoat.smtp.replies import reply

R_SHUTDOWN = reply(421, "4.3.2", "Service shutting down, try again later")
R_VRFY_NOT_IMPLEMENTED = reply(502, "5.5.1", "VRFY and EXPN are not offered")
R_HEALTH_CHECK = reply(550, "5.7.0", "Health check connection: no mail accepted")
_HEALTH_CHECK_COMMANDS = frozenset({Helo, Rset, Noop, Help, Quit})
R_TEMP_ERROR = reply(451, "4.3.0", "Error: local error in processing, try again later")


_STAGES: dict[type, str] = {
    Helo: "latency.helo",
    MailFrom: "latency.mail",
    RcptTo: "latency.rcpt",
    DataStart: "latency.data",
}
"""The latency histogram of each checked command (its arrival to its reply)."""


class SmtpSession(Deadlines, Refusals, Transactions, TlsUpgrade):
    """The engine driver, with the parts; its state is declared in `SessionBase`."""

    __slots__ = ()

    # ------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        host, state = self.host, self.state
        settings = state.settings
        self.conn = ServerConnection(
            offered_limits(settings.smtp, state.delivery.capabilities),
            settings.server.hostname,
            tls_available=state.tls_context is not None,
        )
        host.sessions.add(self)
        # a client the supervisor held greeted (server/hold.py) has waited since its 220
        self._started = self._waiting_since = self._last_byte = (
            host.loop.time() - self.client.waited
        )
        self._arm_timer()
        verdict, self._greeting = self._greeting, None
        if isinstance(verdict, Decision) and verdict.delay:
            # A held greeting (pregreet test, tarpit): a timer, and talkers are caught by the
            # engine meanwhile.
            self._hold = host.loop.call_later(verdict.delay, self._greet_held, verdict)
        else:
            self._greet(verdict)
            self._pump()

    def _greet_held(self, verdict: Verdict) -> None:
        self._hold = None
        if self.transport is None:
            return
        self._greet(verdict)
        if self._task is None:
            self._pump()
        self._rearm_timer()

    def _greet(self, verdict: Verdict) -> None:
        answer = verdict.reply if isinstance(verdict, Decision) else verdict
        if answer is not None:
            self._write(answer.to_bytes())
            self._close("refused")
        else:
            self.conn.greeting("ESMTP", sent=self._pre_greeted)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        self._last_byte = self.host.loop.time()
        self._data_bytes += len(data)
        conn.receive_data(data)
        if self._task is None and self._hold is None:
            self._pump()
        else:
            self._flow_control()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        if self._task is None and self._hold is None:
            self._pump()
        return True  # we close once the replies are flushed

    def connection_lost(self, exc: Exception | None) -> None:
        for handle in (self._timer, self._hold):
            if handle is not None:
                handle.cancel()
        self._timer = self._hold = None
        task = self._task
        if task is not None and not task.done():
            # The work in flight owns the spool until it ends; the session is released then.
            # A delivery runs to its end (README: "A client that vanishes after the final
            # dot"); anything else is cancelled.
            self._lost = (exc,)
            if not self._delivering:
                task.cancel()
            return
        self._free(exc)

    def _free(self, exc: Exception | None) -> None:
        """The connection is gone and no work is in flight: free what the session holds."""
        host = self.host
        self._lost = None
        self._drop_spool()
        host.sessions.discard(self)
        reason = self._close_reason if exc is None else "error"
        if reason == "eof":  # closed after the 220 without a HELO: the supervisor counts them
            self.client.tag(LEFT_SILENT)
        self.state.pipeline.disconnect(self.client)
        health_check = self.client.has(PROXY_LOCAL)  # a proxy's own: not a client's session
        if not health_check:
            host.stats.incr(f"closed.{reason}")
        if self.transport is None:
            return
        self.transport = None
        if not logs.enabled():
            return
        conn = self.conn
        logs.event(
            "disconnect",
            logging.DEBUG if health_check else logging.INFO,
            session=self.session_id,
            client=self.client.address,
            helo=conn.helo,
            tls=conn.tls_active,
            transactions=self.transactions,
            errors=conn.errors,
            reason=reason if exc is None else f"error: {exc}",
            duration=host.loop.time() - self._started,
        )

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._flow_control()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._flow_control()

    # --------------------------------------------------------------- engine
    def _pump(self) -> None:
        """Handle every event the engine has ready; stop at the first one that must wait."""
        conn = self.conn
        transport = self.transport
        while transport is not None and self._hold is None and not transport.is_closing():
            ev = conn.next_event()
            if ev is NEED_DATA or ev is PAUSED:
                break
            if ev is CLOSED:
                self._flush()
                self._close(self._close_reason)
                return
            assert isinstance(ev, Event)
            pending = self._handle(ev)
            if pending is not None:
                # The replies queued so far answer commands of the same flight: they go out
                # with the one that waits for this work, in one write (RFC 2920 §3.2 asks
                # servers to send a group's replies as a unit).
                self._start(pending)
                self._flow_control()
                return
        if self._hold is None:
            self._flush()
        self._flow_control()

    def _start(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logs.event(
                    "session error",
                    logging.ERROR,
                    session=self.session_id,
                    client=self.client.address,
                    **logs.failure(exc),
                )
                if self.transport is not None:
                    self._flush()  # the replies to the commands of the group before this one
                    self._write(R_TEMP_ERROR.to_bytes())
                    self._close("internal_error")
                return
            finally:
                self._task = None
                if self._lost is not None:
                    self._free(*self._lost)
            self._waiting_since = self.host.loop.time()
            if self._stopping and self.transport is not None:
                self._flush()  # the answer to the work in flight (a delivery's 250), then 421
                self.shutdown()
                return
            if self.transport is not None:
                self._rearm_timer()
                if self._hold is None:
                    self._pump()

        self._task = self.host.loop.create_task(run())

    def _handle(self, ev: Event) -> Awaitable[None] | None:
        """React to one event. Returns an awaitable only when the answer must wait."""
        if isinstance(ev, DataChunk):
            assert self.spool is not None
            self.spool.write(ev.data)
            return None
        if isinstance(ev, Command):
            return self._command(ev)
        if isinstance(ev, Rejected):
            if self.conn.closing:
                self._close_reason = ev.reason
            if ev.address is None:
                return self._rejected(ev)
            if ev.command == "RCPT":
                return self._rejected(ev, rcpt=ev.address)
            return self._rejected(ev, sender=ev.address)
        if isinstance(ev, MessageAborted):
            self._drop_spool()
            self._log_transaction(ev.reason, None)
        elif isinstance(ev, ConnectionClosed):
            self._close_reason = "client_closed" if self.conn.helo or self.transactions else "eof"
        return None

    def _command(self, ev: Command) -> Awaitable[None] | None:
        self._cmd_started = time.monotonic()
        client = self.client
        kind = type(ev)  # the events are final classes: cheaper than a chain of isinstance
        if client.tags and client.has(PROXY_LOCAL):
            return self._health_check(ev)
        if kind is Helo:
            return self._verdict(self.state.pipeline.run("helo", client, ev), ev)
        if kind is MailFrom:
            self._tx_started = time.monotonic()
            self.queue_id = new_queue_id()
            return self._verdict(self.state.pipeline.run("mail", client, ev), ev)
        if kind is RcptTo:
            return self._verdict(self.state.pipeline.run("rcpt", client, ev), ev)
        if kind is DataStart:
            return self._verdict(self.state.pipeline.run("data", client), ev)
        if kind is MessageEnd:
            return self._deliver()
        conn = self.conn
        if kind is Vrfy or kind is Expn:
            if self.state.settings.smtp.vrfy_reply == "502":
                conn.send(R_VRFY_NOT_IMPLEMENTED)
                return self._refused(R_VRFY_NOT_IMPLEMENTED, ev)
            conn.accept()
            return None
        if kind is StartTls:
            return self._starttls()
        conn.accept()  # RSET, NOOP, HELP, QUIT
        return None

    def _health_check(self, ev: Command) -> Awaitable[None] | None:
        """A proxy's own connection (PROXY LOCAL, v1 UNKNOWN) names no client: EHLO/HELO,
        NOOP, RSET, HELP and QUIT are answered, anything else refused; no check runs, and
        nothing is ever accepted for delivery or relay."""
        if type(ev) in _HEALTH_CHECK_COMMANDS:
            self.conn.accept()
            return None
        self.conn.send(R_HEALTH_CHECK)
        return self._refused(R_HEALTH_CHECK, ev, "health_check")

    def _verdict(self, result: Verdict | Awaitable[Verdict], ev: Command) -> Awaitable[None] | None:
        # None, the usual answer, without inspect.isawaitable (an ABC check)
        if result is not None and (
            inspect.isawaitable(result) or (isinstance(result, Decision) and result.delay)
        ):
            return self._verdict_later(result, ev)
        return self._answer(result, ev)

    async def _verdict_later(self, pending: Verdict | Awaitable[Verdict], ev: Command) -> None:
        verdict = await pending if inspect.isawaitable(pending) else pending
        if isinstance(verdict, Decision) and verdict.delay:
            await asyncio.sleep(verdict.delay)
        more = self._answer(verdict, ev)
        if more is not None:
            await more

    def _answer(self, verdict: Verdict, ev: Command) -> Awaitable[None] | None:
        stage = _STAGES.get(type(ev))
        if stage is not None:
            self.host.stats.histogram(stage).observe(time.monotonic() - self._cmd_started)
        conn = self.conn
        if isinstance(verdict, Decision):
            if verdict.reply is not None:
                conn.send(verdict.reply, close=verdict.close)
                return self._refused(verdict.reply, ev, verdict.reason)
            if verdict.close:
                conn.send(R_CLOSING, close=True)
                self._close_reason = "policy"
                return None
        elif verdict is not None:
            conn.send(verdict)
            return self._refused(verdict, ev)
        conn.accept()
        if isinstance(ev, Helo):
            self.client.helo = ev.name
        elif isinstance(ev, DataStart):
            self.spool = self.host.new_spool(self.state.settings)
            self.envelope = conn.envelope
            self._data_bytes = 0
        return None

    # ----------------------------------------------------------- mechanics
    def _flow_control(self) -> None:
        want_pause = (
            self._writing_paused or self.conn.buffered > self.state.settings.server.input_buffer
        )
        if want_pause == self._reading_paused:  # the usual case: nothing to change
            return
        if self.transport is None or self.transport.is_closing():
            return
        if want_pause:
            self._reading_paused = True
            self.transport.pause_reading()
        else:
            self._reading_paused = False
            self.transport.resume_reading()

    def shutdown(self) -> None:
        """Server is stopping: refuse politely; with work in flight (a delivery), once it
        has answered (the drain does not wait on a client that keeps the connection)."""
        self._stopping = True
        if self._task is None and self.transport is not None:
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            self._write(R_SHUTDOWN.to_bytes())
            self._close("shutdown")
