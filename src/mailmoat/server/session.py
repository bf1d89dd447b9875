"""One client connection: an asyncio.Protocol that drives the engine and the policy pipeline.

The session owns no SMTP syntax (the engine does) and decides no policy (the checks do). It
moves bytes, keeps time, holds the spool, hands finished messages to delivery, and applies
backpressure: reading pauses while unparsed input piles up (a reply is pending, for example
while the downstream server is slow) or while the client does not read our replies.

Idle sessions hold no task: work runs synchronously inside `data_received` and a task exists
only while a hook or a delivery really waits.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import secrets
import time
from collections.abc import Awaitable
from datetime import datetime
from email.utils import format_datetime
from typing import TYPE_CHECKING, cast

from mailmoat import logs
from mailmoat.message import Envelope, Message, Spool
from mailmoat.policy.base import Client, Decision, Verdict
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, Phase, ServerConnection
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
from mailmoat.smtp.replies import reply

if TYPE_CHECKING:
    from mailmoat.server.gateway import Gateway

R_TIMEOUT = reply(421, "4.4.2", "Error: timeout exceeded, closing connection")
R_SHUTDOWN = reply(421, "4.3.2", "Service shutting down, try again later")
R_VRFY_NOT_IMPLEMENTED = reply(502, "5.5.1", "VRFY and EXPN are not offered")
R_CLOSING = reply(421, "4.7.0", "Closing connection")
R_TEMP_ERROR = reply(451, "4.3.0", "Error: local error in processing, try again later")


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


class SmtpSession(asyncio.Protocol):
    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.conn: ServerConnection
        self.client: Client
        self.spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_input = 0.0
        self._reading_paused = False
        self._writing_paused = False
        self._close_reason = "quit"
        self._started = time.monotonic()
        self._tx_started = 0.0
        self.transactions = 0
        self.queue_id = ""
        self.envelope: Envelope | None = None  # kept past the engine's reset, for the log

    # ------------------------------------------------------------ transport
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = self.transport.get_extra_info("peername") or ("0.0.0.0", 0)
        self.client = Client(address=peer[0], port=peer[1])
        settings = self.gw.settings
        self.conn = ServerConnection(
            settings.smtp, settings.server.hostname, tls_available=self.gw.tls_context is not None
        )
        self.gw.sessions.add(self)
        self._last_input = self.loop.time()
        self._arm_timer()
        verdict = self.gw.pipeline.run("connect", self.client)
        if inspect.isawaitable(verdict) or (isinstance(verdict, Decision) and verdict.delay):
            self._start(self._after_connect(verdict))
        else:
            self._greet(verdict)
            self._pump()

    async def _after_connect(self, pending: Verdict | Awaitable[Verdict]) -> None:
        verdict = await pending if inspect.isawaitable(pending) else pending
        if isinstance(verdict, Decision) and verdict.delay:
            await asyncio.sleep(verdict.delay)  # a held greeting: talkers are caught by the engine
        self._greet(verdict)

    def _greet(self, verdict: Verdict) -> None:
        answer = verdict.reply if isinstance(verdict, Decision) else verdict
        if answer is not None:
            self._write(answer.to_bytes())
            self._close("refused")
        else:
            self.conn.greeting("ESMTP")

    def data_received(self, data: bytes) -> None:
        self._last_input = self.loop.time()
        self.conn.receive_data(data)
        if self._task is None:
            self._pump()
        else:
            self._flow_control()

    def eof_received(self) -> bool:
        self.conn.receive_data(b"")
        if self._task is None:
            self._pump()
        return True  # we close once the replies are flushed

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._drop_spool()
        self.gw.sessions.discard(self)
        self.gw.pipeline.disconnect(self.client)
        if self.transport is not None:
            self.transport = None
            logs.event(
                "disconnect",
                client=self.client.address,
                helo=self.conn.helo,
                tls=self.conn.tls_active,
                transactions=self.transactions,
                errors=self.conn.errors,
                reason=self._close_reason if exc is None else f"error: {exc}",
                duration=time.monotonic() - self._started,
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
        while self.transport is not None:
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
                self._start(pending)
                break
        self._flush()
        self._flow_control()

    def _start(self, work: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception:
                logs.log.exception("session error client=%s", self.client.address)
                if self.transport is not None:
                    self._write(R_TEMP_ERROR.to_bytes())
                    self._close("internal error")
                return
            finally:
                self._task = None
            self._last_input = self.loop.time()
            self._pump()

        self._task = self.loop.create_task(run())

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
            logs.event(
                "reject",
                logging.DEBUG,
                client=self.client.address,
                reason=ev.reason,
                command=ev.command,
                reply=str(ev.reply),
            )
        elif isinstance(ev, MessageAborted):
            self._drop_spool()
            self._log_transaction(ev.reason, None)
        elif isinstance(ev, ConnectionClosed):
            self._close_reason = "client closed" if self.conn.helo or self.transactions else "eof"
        return None

    def _command(self, ev: Command) -> Awaitable[None] | None:
        client = self.client
        if isinstance(ev, Helo):
            return self._verdict(self.gw.pipeline.run("helo", client, ev), ev)
        if isinstance(ev, MailFrom):
            self._tx_started = time.monotonic()
            self.queue_id = new_queue_id()
            return self._verdict(self.gw.pipeline.run("mail", client, ev), ev)
        if isinstance(ev, RcptTo):
            return self._verdict(self.gw.pipeline.run("rcpt", client, ev), ev)
        if isinstance(ev, DataStart):
            return self._verdict(self.gw.pipeline.run("data", client), ev)
        if isinstance(ev, MessageEnd):
            return self._deliver()
        if isinstance(ev, Vrfy | Expn):
            if self.gw.settings.smtp.vrfy_reply == "502":
                self.conn.send(R_VRFY_NOT_IMPLEMENTED)
            else:
                self.conn.accept()
            return None
        if isinstance(ev, StartTls):
            return self._starttls()
        self.conn.accept()  # RSET, NOOP, HELP, QUIT
        return None

    def _verdict(self, result: Verdict | Awaitable[Verdict], ev: Command) -> Awaitable[None] | None:
        if inspect.isawaitable(result) or (isinstance(result, Decision) and result.delay):
            return self._verdict_later(result, ev)
        self._answer(result, ev)
        return None

    async def _verdict_later(self, pending: Verdict | Awaitable[Verdict], ev: Command) -> None:
        verdict = await pending if inspect.isawaitable(pending) else pending
        if isinstance(verdict, Decision) and verdict.delay:
            await asyncio.sleep(verdict.delay)
        self._answer(verdict, ev)

    def _answer(self, verdict: Verdict, ev: Command) -> None:
        if isinstance(verdict, Decision):
            if verdict.reply is not None:
                self.conn.send(verdict.reply, close=verdict.close)
                return
            if verdict.close:
                self.conn.send(R_CLOSING, close=True)
                return
        elif verdict is not None:
            self.conn.send(verdict)
            return
        self.conn.accept()
        if isinstance(ev, Helo):
            self.client.helo = ev.name
        elif isinstance(ev, DataStart):
            self.spool = Spool(self.gw.settings.server.spool_memory)
            self.envelope = self.conn.envelope

    # -------------------------------------------------------------- delivery
    async def _deliver(self) -> None:
        envelope = self.conn.envelope
        assert envelope is not None and self.spool is not None
        message = Message(envelope, self.spool, self.queue_id, self._received_header())
        try:
            verdict = self.gw.pipeline.run("message", self.client, message)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if isinstance(verdict, Decision) and verdict.delay:
                await asyncio.sleep(verdict.delay)
            refusal = verdict.reply if isinstance(verdict, Decision) else verdict
            if refusal is not None:
                close = isinstance(verdict, Decision) and verdict.close
                self.conn.send(refusal, close=close)
                self._log_transaction(str(refusal), None, message)
                return
            result = await self.gw.delivery.deliver(message)
        finally:
            self._drop_spool()
        self.conn.send(result.reply)
        if result.accepted:
            self.transactions += 1
        self._log_transaction(str(result.reply), result.detail, message)

    def _received_header(self) -> bytes:
        """RFC 5321 §4.4 trace line, with the protocol keyword of RFC 3848 / RFC 6531."""
        conn, client = self.conn, self.client
        envelope = conn.envelope
        assert envelope is not None
        proto = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP") if conn.esmtp else "SMTP"
        if conn.tls_active:
            proto += "S"
        literal = f"IPv6:{client.ip}" if client.ip.version == 6 else str(client.ip)
        rcpt = f"\r\n\tfor <{envelope.rcpt_to[0]}>" if len(envelope.rcpt_to) == 1 else ""
        now = format_datetime(datetime.now().astimezone())
        text = (
            f"Received: from {conn.helo} ([{literal}])\r\n"
            f"\tby {conn.hostname} (mailmoat) with {proto} id {self.queue_id}{rcpt};\r\n"
            f"\t{now}\r\n"
        )
        return text.encode("utf-8")

    def _log_transaction(
        self, outcome: str, downstream: str | None, message: Message | None = None
    ) -> None:
        envelope = self.envelope
        logs.event(
            "transaction",
            queue_id=self.queue_id,
            client=self.client.address,
            helo=self.conn.helo,
            sender=f"<{envelope.mail_from}>" if envelope else None,
            recipients=[f"<{r}>" for r in envelope.rcpt_to] if envelope else None,
            size=message.size if message else None,
            result=outcome,
            downstream=downstream,
            duration=time.monotonic() - self._tx_started,
        )

    # ------------------------------------------------------------------- TLS
    async def _starttls(self) -> None:
        assert self.transport is not None and self.gw.tls_context is not None
        self.conn.accept()
        self._flush()
        try:
            new = await self.loop.start_tls(
                self.transport,
                self,
                self.gw.tls_context,
                server_side=True,
                ssl_handshake_timeout=self.gw.settings.timeouts.command,
            )
        except (TimeoutError, OSError, ConnectionError) as err:
            self._close_reason = f"tls handshake failed: {err}"
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            return
        self.transport = new
        self.conn.tls_started()
        self.client.tls = True
        self.client.helo = None

    # ----------------------------------------------------------- mechanics
    def _write(self, data: bytes) -> None:
        if data and self.transport is not None:
            self.transport.write(data)

    def _flush(self) -> None:
        self._write(self.conn.data_to_send())

    def _close(self, reason: str) -> None:
        self._close_reason = reason
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _drop_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None

    def _flow_control(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        want_pause = (
            self._writing_paused or self.conn.buffered > self.gw.settings.server.input_buffer
        )
        if want_pause and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        elif not want_pause and self._reading_paused:
            self._reading_paused = False
            self.transport.resume_reading()

    def _timeout_for_phase(self) -> float:
        t = self.gw.settings.timeouts
        if self.conn.phase is Phase.DATA:
            return t.data
        if self.conn.helo is None and self.transactions == 0:
            return t.greeting
        return t.command

    def _arm_timer(self) -> None:
        self._timer = self.loop.call_later(self._timeout_for_phase(), self._on_timer)

    def _on_timer(self) -> None:
        """Close an idle client. While we are the ones working (a task runs), the clock waits."""
        if self.transport is None:
            return
        now = self.loop.time()
        timeout = self._timeout_for_phase()
        if self._task is None and now - self._last_input >= timeout:
            self._write(R_TIMEOUT.to_bytes())
            self._close("timeout")
            return
        remaining = timeout if self._task is not None else timeout - (now - self._last_input)
        self._timer = self.loop.call_later(max(remaining, 0.05), self._on_timer)

    def shutdown(self) -> None:
        """Server is stopping: refuse politely unless a delivery is in flight."""
        if self._task is None and self.transport is not None:
            self._write(R_SHUTDOWN.to_bytes())
            self._close("shutdown")
