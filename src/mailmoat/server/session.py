"""One client connection: an asyncio.Protocol that drives the engine and the policy pipeline.

The session owns no SMTP syntax (the engine does) and decides no policy (the checks do). It
moves bytes, keeps time, holds the spool, hands finished messages to delivery, and applies
backpressure: reading pauses while unparsed input piles up (a reply is pending, for example
while the downstream server is slow) or while the client does not read our replies.

Idle sessions hold no task: work runs synchronously inside `data_received` and a task exists
only while a hook or a delivery really waits. A delay (a held greeting, a tarpitted reply) is a
timer, not a task. A session exists only for a client that admission let in: the gateway's
listener runs the connect stage on the bare socket and refuses without making one.

Deadlines (slow-client defence). Each wait for the client has a deadline that trickled bytes do
not move: from the greeting to the first complete command line (`timeouts.greeting`), from each
reply to the next complete line (`timeouts.command`), and in DATA both a silence limit
(`timeouts.data`) and a minimum average rate (`timeouts.min_data_rate` once `timeouts.data`
has passed). `timeouts.session` caps the whole session. In stress mode the `stress.*` values
replace the first three for clients that are not trusted. While mailmoat itself works (a hook
or a delivery runs, a tarpit delay holds the reply), the clock waits. One timer per session
watches the earliest deadline and re-arms itself only when it fires (or when a new wait ends
sooner). Closes for missed deadlines go through the gateway's close queue, so thousands of idle
clients that time out together are closed at a bounded pace.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import re
import secrets
import time
from collections.abc import Awaitable
from datetime import datetime
from email.utils import format_datetime
from ipaddress import IPv4Address, IPv6Address
from typing import TYPE_CHECKING, cast

from mailmoat import logs
from mailmoat.message import Message, Spool
from mailmoat.policy.base import Client, Decision, HookResult, Verdict
from mailmoat.relay.capabilities import offered_limits
from mailmoat.smtp._abnf import HELO_AS_SENT
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, Phase, ServerConnection
from mailmoat.smtp.envelope import Envelope
from mailmoat.smtp.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    DataStart,
    Event,
    Expn,
    Helo,
    MailFrom,
    MessageAborted,
    MessageEnd,
    RcptTo,
    Rejected,
    StartTls,
    Vrfy,
)
from mailmoat.smtp.replies import Reply, reply

if TYPE_CHECKING:
    from mailmoat.server.gateway import Gateway

R_TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded, closing connection")
R_SESSION_TIME = reply(421, "4.4.2", "Error: session time limit exceeded, closing connection")
R_SLOW_DATA = reply(421, "4.4.2", "Error: message data too slow, closing connection")
R_SHUTDOWN = reply(421, "4.3.2", "Service shutting down, try again later")
R_VRFY_NOT_IMPLEMENTED = reply(502, "5.5.1", "VRFY and EXPN are not offered")
R_CLOSING = reply(421, "4.7.0", "Closing connection")
R_TEMP_ERROR = reply(451, "4.3.0", "Error: local error in processing, try again later")


_VERBS: dict[type, str] = {
    MailFrom: "MAIL",
    RcptTo: "RCPT",
    DataStart: "DATA",
    MessageEnd: "END-OF-DATA",
    Vrfy: "VRFY",
    Expn: "EXPN",
}
"""The command a refused event stands for, as logged (HELO/EHLO is the engine's own)."""


_STAGES: dict[type, str] = {
    Helo: "latency.helo",
    MailFrom: "latency.mail",
    RcptTo: "latency.rcpt",
    DataStart: "latency.data",
}
"""The latency histogram of each checked command (its arrival to its reply)."""


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


_date: tuple[int, str] = (-1, "")


def trace_date() -> str:
    """The local time for a trace header (RFC 5322 date-time, to the second), formatted once
    a second: `format_datetime` costs more than the rest of the Received header."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_datetime(datetime.fromtimestamp(second).astimezone()))
    return _date[1]


@functools.lru_cache(maxsize=1024)
def _trace_helo(helo: str | None) -> str:
    """The HELO name for the Received: line: as sent when it is a domain or an address
    literal, else `unknown (HELO ...)` with `(`, `)` and `\\` escaped, so a name such as `(`
    or `x;Mon,` cannot open a comment or end the clause (the engine already refuses anything
    but printable ASCII)."""
    if helo and HELO_AS_SENT.fullmatch(helo):
        return helo
    text = re.sub(r"([()\\])", r"\\\1", helo or "")
    return f"unknown (HELO {text})"


@functools.lru_cache(maxsize=1024)
def _address_literal(ip: IPv4Address | IPv6Address) -> str:
    """RFC 5321 §4.1.3 address literal, without the brackets (`str` of an address is slow)."""
    return f"IPv6:{ip}" if ip.version == 6 else str(ip)


class SmtpSession(asyncio.Protocol):
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
        "_task",
        "_timer",
        "_timer_at",
        "_tx_started",
        "_waiting_since",
        "_writing_paused",
        "client",
        "conn",
        "envelope",
        "gw",
        "queue_id",
        "session_id",
        "spool",
        "transactions",
        "transport",
    )

    def __init__(
        self, gateway: Gateway, client: Client, verdict: Verdict = None, greeted: bool = False
    ) -> None:
        """`client` passed admission (the gateway ran the connect stage on the bare socket);
        `verdict` is what that stage said: go on, or hold the greeting (a Decision's delay);
        `greeted`: the listener wrote the 220 on the bare socket already."""
        self.gw = gateway
        self._pre_greeted = greeted
        self.client = client
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection  # made in connection_made
        self.spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._delivering = False  # the message is with delivery: a lost client does not stop it
        self._lost: tuple[Exception | None] | None = None  # connection lost while work ran
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

    # ------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        gw = self.gw
        settings = gw.settings
        self.conn = ServerConnection(
            offered_limits(settings.smtp, gw.delivery.capabilities),
            settings.server.hostname,
            tls_available=gw.tls_context is not None,
        )
        gw.sessions.add(self)
        self._started = self._waiting_since = self._last_byte = gw.loop.time()
        self._arm_timer()
        verdict, self._greeting = self._greeting, None
        if isinstance(verdict, Decision) and verdict.delay:
            # A held greeting (pregreet test, tarpit): a timer, and talkers are caught by the
            # engine meanwhile.
            self._hold = gw.loop.call_later(verdict.delay, self._greet_held, verdict)
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
        self._last_byte = self.gw.loop.time()
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
        gw = self.gw
        self._lost = None
        self._drop_spool()
        gw.sessions.discard(self)
        gw.pipeline.disconnect(self.client)
        reason = self._close_reason if exc is None else "error"
        gw.stats.incr(f"closed.{reason}")
        if self.transport is None:
            return
        self.transport = None
        if not logs.enabled():
            return
        conn = self.conn
        logs.event(
            "disconnect",
            session=self.session_id,
            client=self.client.address,
            helo=conn.helo,
            tls=conn.tls_active,
            transactions=self.transactions,
            errors=conn.errors,
            reason=reason if exc is None else f"error: {exc}",
            duration=gw.loop.time() - self._started,
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
            self._waiting_since = self.gw.loop.time()
            if self.transport is not None:
                self._rearm_timer()
                if self._hold is None:
                    self._pump()

        self._task = self.gw.loop.create_task(run())

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
            return self._rejected(ev)
        if isinstance(ev, MessageAborted):
            self._drop_spool()
            self._log_transaction(ev.reason, None)
        elif isinstance(ev, ConnectionClosed):
            self._close_reason = "client_closed" if self.conn.helo or self.transactions else "eof"
        return None

    def _rejected(self, ev: Rejected, rcpt: str | None = None) -> Awaitable[None] | None:
        """The client got an error reply: log and count it, and let the checks react
        (tarpit, strikes)."""
        self.client.errors = self.conn.errors
        self.gw.stats.incr(f"rejected.{ev.reason}")
        if logs.enabled():
            envelope = self.conn.envelope or self.envelope
            logs.event(
                "refused",
                session=self.session_id,
                client=self.client.address,
                helo=self.conn.helo,
                sender=f"<{envelope.mail_from}>" if envelope else None,
                rcpt=f"<{rcpt}>" if rcpt is not None else None,
                command=ev.command or None,
                code=ev.reply.code,
                status=ev.reply.enhanced,
                reason=ev.reason,
                reply=ev.reply.text,
            )
        verdict = self.gw.pipeline.run("rejected", self.client, ev)
        if verdict is not None and inspect.isawaitable(verdict):
            return self._rejected_later(verdict)
        self._after_rejected(verdict)
        return None

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
            self.gw.stats.incr("tarpit.delayed")
            self._hold = self.gw.loop.call_later(verdict.delay, self._release)

    def _release(self) -> None:
        """A tarpit delay is over: send what was held and go on."""
        self._hold = None
        if self.transport is None:
            return
        self._flush()
        if self._task is None:
            self._pump()
        self._rearm_timer()

    def _command(self, ev: Command) -> Awaitable[None] | None:
        self._cmd_started = time.monotonic()
        client = self.client
        kind = type(ev)  # the events are final classes: cheaper than a chain of isinstance
        if kind is Helo:
            return self._verdict(self.gw.pipeline.run("helo", client, ev), ev)
        if kind is MailFrom:
            self._tx_started = time.monotonic()
            self.queue_id = new_queue_id()
            return self._verdict(self.gw.pipeline.run("mail", client, ev), ev)
        if kind is RcptTo:
            return self._verdict(self.gw.pipeline.run("rcpt", client, ev), ev)
        if kind is DataStart:
            return self._verdict(self.gw.pipeline.run("data", client), ev)
        if kind is MessageEnd:
            return self._deliver()
        conn = self.conn
        if kind is Vrfy or kind is Expn:
            if self.gw.settings.smtp.vrfy_reply == "502":
                conn.send(R_VRFY_NOT_IMPLEMENTED)
                return self._refused(R_VRFY_NOT_IMPLEMENTED, ev)
            conn.accept()
            return None
        if kind is StartTls:
            return self._starttls()
        conn.accept()  # RSET, NOOP, HELP, QUIT
        return None

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
            self.gw.stats.histogram(stage).observe(time.monotonic() - self._cmd_started)
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
            self.spool = self.gw.new_spool()
            self.envelope = conn.envelope
            self._data_bytes = 0
        return None

    def _refused(self, answer: Reply, ev: Command, reason: str = "") -> Awaitable[None] | None:
        """A check (or the session) refused a command: the `rejected` stage sees it too;
        `reason` names the check (the counter is `rejected.<reason>`)."""
        if answer.positive:
            return None
        if self.conn.closing:
            self._close_reason = "policy"
        verb = _VERBS.get(type(ev)) or ("EHLO" if getattr(ev, "extended", False) else "HELO")
        rcpt = ev.address if type(ev) is RcptTo else None
        return self._rejected(Rejected(reason or "policy", answer, verb), rcpt)

    # -------------------------------------------------------------- delivery
    async def _deliver(self) -> None:
        """End of DATA: a header block that parsers read differently is refused (554 5.6.0,
        `headers.Headers.defect`), so the checks and the internal server see the same fields,
        and one longer than smtp.max_header_size (552 5.3.4); then the checks, then delivery."""
        envelope = self.conn.envelope
        assert envelope is not None and self.spool is not None
        trace = self._received_header()
        limit = self.gw.settings.smtp.max_header_size
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
                verdict = self.gw.pipeline.run("message", self.client, message)
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
            result = await self.gw.delivery.deliver(message)
        finally:
            self._delivering = False
            self._drop_spool()
        self.conn.send(result.reply)
        self._count_message(result.reply, message)
        if result.accepted:
            self.transactions += 1
        self._log_transaction(result.reply, result.detail, message)

    def _count_message(self, answer: Reply, message: Message) -> None:
        """The end of data answered: its outcome, its size and how long the checks and the
        delivery took."""
        stats = self.gw.stats
        stats.histogram("latency.message").observe(time.monotonic() - self._cmd_started)
        if answer.positive:
            stats.incr("messages.accepted")
            stats.incr("messages.bytes", message.size)
        else:
            stats.incr("messages.deferred" if answer.transient else "messages.refused")

    def _received_header(self) -> bytes:
        """RFC 5321 §4.4 trace line, with the protocol keyword of RFC 3848 / RFC 6531."""
        conn, client = self.conn, self.client
        envelope = conn.envelope
        assert envelope is not None
        proto = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP") if conn.esmtp else "SMTP"
        if conn.tls_active:
            proto += "S"
        literal = _address_literal(client.ip)
        rcpt = f"\r\n\tfor <{envelope.rcpt_to[0]}>" if len(envelope.rcpt_to) == 1 else ""
        text = (
            f"Received: from {_trace_helo(conn.helo)} ([{literal}])\r\n"
            f"\tby {conn.hostname} (mailmoat) with {proto} id {self.queue_id}{rcpt};\r\n"
            f"\t{trace_date()}\r\n"
        )
        return text.encode("utf-8")

    def _log_transaction(
        self, outcome: str | Reply, downstream: str | None, message: Message | None = None
    ) -> None:
        """`outcome`: the reply the client got, or why the message was dropped."""
        if not logs.enabled():
            return
        envelope = self.envelope
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

    # ------------------------------------------------------------------- TLS
    async def _starttls(self) -> None:
        conn = self.conn
        assert self.transport is not None and self.gw.tls_context is not None
        conn.accept()
        self._flush()
        try:
            new = await self.gw.loop.start_tls(
                self.transport,
                self,
                self.gw.tls_context,
                server_side=True,
                ssl_handshake_timeout=self.gw.settings.timeouts.command,
            )
        except (TimeoutError, OSError, ConnectionError) as err:
            self._close_reason = "tls_failed"
            logs.event("tls_failed", logging.INFO, client=self.client.address, error=str(err))
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            return
        self.transport = new
        conn.tls_started()
        self.client.tls = True
        self.client.helo = None

    # ----------------------------------------------------------- mechanics
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _flush(self) -> None:
        """Write the queued replies; a new wait for the client starts with them."""
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)
            self._waiting_since = self.gw.loop.time()
            # A new wait may end sooner than the timer would fire (greeting -> command, DATA).
            if self._timer is not None and self._deadline()[0] < self._timer_at:
                self._timer.cancel()
                self._arm_timer()

    def _close(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _flow_control(self) -> None:
        want_pause = (
            self._writing_paused or self.conn.buffered > self.gw.settings.server.input_buffer
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

    def _deadline(self) -> tuple[float, str]:
        """When the current wait for the client ends, and what closes it then."""
        gw = self.gw
        conn = self.conn
        t = gw.settings.timeouts
        stressed = gw.stress.active and not self.client.trusted
        st = gw.stress.settings
        session_end = self._started + t.session
        if conn.phase is Phase.DATA:
            silence = st.data if stressed else t.data
            end, why = self._last_byte + silence, "timeout"
            if t.min_data_rate:
                slow = self._waiting_since + silence + self._data_bytes / t.min_data_rate
                if slow < end:
                    end, why = slow, "min_data_rate"
        elif conn.helo is None and self.transactions == 0:
            end, why = self._waiting_since + (st.greeting if stressed else t.greeting), "timeout"
        else:
            end, why = self._waiting_since + (st.command if stressed else t.command), "timeout"
        if session_end <= end:
            return session_end, "session_time"
        return end, why

    def _arm_timer(self) -> None:
        self._timer_at = when = self._deadline()[0]
        self._timer = self.gw.loop.call_at(when, self._on_timer)

    def rearm(self, not_before: float) -> None:
        """The deadlines got shorter (stress mode): look again at the new deadline, but not
        before `not_before` (the gateway spreads the closes)."""
        if self._timer is None or self.transport is None:
            return
        when = max(self._deadline()[0], not_before)
        if when < self._timer_at:
            self._timer.cancel()
            self._timer_at = when
            self._timer = self.gw.loop.call_at(when, self._on_timer)

    def _rearm_timer(self) -> None:
        """We finished working: the client's clock runs again from now. A timer that fires
        no later than the new deadline stays (it re-arms itself when it fires early)."""
        if self.transport is None or self.transport.is_closing():
            return
        if self._timer is not None:
            if self._timer_at <= self._deadline()[0]:
                return
            self._timer.cancel()
        self._arm_timer()

    def _on_timer(self) -> None:
        """Close a client that missed its deadline. While we are the ones working (a hook or a
        delivery runs, or a delay holds the reply), the clock waits."""
        self._timer = None
        if self.transport is None:
            return
        loop = self.gw.loop
        if self._task is not None or self._hold is not None:
            # Busy: the end of the work re-arms; meanwhile only the session cap is watched.
            session_end = self._started + self.gw.settings.timeouts.session
            self._timer_at = max(session_end, loop.time() + 1.0)
            self._timer = loop.call_at(self._timer_at, self._on_timer)
            return
        now = loop.time()
        end, why = self._deadline()
        if now < end:
            self._close_due = False
            self._timer_at = end
            self._timer = loop.call_at(end, self._on_timer)
            return
        if not self._close_due:
            slot = self.gw.close_slot(now)
            if slot > now:
                # Thousands of clients that connected together miss their deadlines together:
                # each waits for its place in the gateway's close queue.
                self._close_due = True
                self._timer_at = slot
                self._timer = loop.call_at(slot, self._on_timer)
                return
        answer = {"timeout": R_TIMEOUT, "min_data_rate": R_SLOW_DATA}.get(why, R_SESSION_TIME)
        self._write(answer.to_bytes())
        self._close(why)
        verdict = self.gw.pipeline.run("rejected", self.client, Rejected(why, answer))
        if inspect.isawaitable(verdict):
            self.gw.spawn(verdict)

    def shutdown(self) -> None:
        """Server is stopping: refuse politely unless a delivery is in flight."""
        if self._task is None and self.transport is not None:
            if self._hold is not None:
                self._hold.cancel()
                self._hold = None
            self._write(R_SHUTDOWN.to_bytes())
            self._close("shutdown")
