"""One milter connection: the MTA's stages run through the gateway's own checks.

The MTA (Postfix, Sendmail) tells the milter what its SMTP client did; this session turns each
step into the event the gateway's checks take (`Client` at connect, `Helo`, `MailFrom`,
`RcptTo`, the `Message` at its end) and runs the same `Pipeline` stage on it. A refusal goes
back as a reply code the MTA gives its client; at the end of the message the header fields a
check removed (forged Authentication-Results) are deleted and the ones it added (ours) are
inserted at the top; the body is never changed.

Bounded: one packet at a time (`MILTER_MAX_PACKET`, and all connections' packets together
within `server.spool_memory_total`), macros, header fields and the header
block (`smtp.max_header_size`); the body goes to a spool (memory up to its budget, then a
temporary file) and stops being kept past `smtp.max_message_size` (then 552). A protocol
violation, an oversized packet, a peer gone mid-packet or silent too long closes this
connection only, counted under `milter.errors.<reason>`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from typing import Protocol

from mailmoat import logs
from mailmoat.config import Settings
from mailmoat.limits import (
    MILTER_IDLE_TIMEOUT,
    MILTER_MAX_HEADERS,
    MILTER_MAX_PACKET,
    MILTER_READ_SIZE,
)
from mailmoat.message import Message, Spool, SpoolBudget
from mailmoat.milter import arguments, codec
from mailmoat.milter.codec import MilterError
from mailmoat.milter.macros import MacroSets
from mailmoat.milter.verdicts import refusal_of, rejected_event
from mailmoat.policy.base import Client, Decision, HookResult, Pipeline, Verdict
from mailmoat.policy.harvest import HarvestDetector
from mailmoat.server.refusals import R_CLOSING
from mailmoat.smtp._abnf import ascii_lower
from mailmoat.smtp.envelope import Envelope
from mailmoat.smtp.events import Helo, MailFrom, RcptTo
from mailmoat.smtp.replies import Reply, reply
from mailmoat.stats import Stats

R_HEADER_TOO_BIG = reply(552, "5.3.4", "Message rejected: header block too big")
R_TOO_MANY_HEADERS = reply(552, "5.3.4", "Message rejected: too many header fields")
R_TOO_BIG = reply(552, "5.3.4", "Message size exceeds fixed maximum message size")

_STAGE_VERB = {"helo": "HELO", "mail": "MAIL", "rcpt": "RCPT", "data": "DATA"}


@dataclass(frozen=True, slots=True, eq=False)
class MilterState:
    """What a reload replaces: the settings and the checks built from them. A milter
    connection takes the service's current one when it opens and keeps it to its end (the
    steps it negotiated depend on those checks)."""

    settings: Settings
    pipeline: Pipeline
    detector: HarvestDetector | None
    """The harvest check's, fed the recipients the MTA refused itself."""


class MilterHost(Protocol):
    """What a milter session needs from the service that runs it."""

    state: MilterState
    stats: Stats
    packet_budget: SpoolBudget

    def new_spool(self) -> Spool: ...


@dataclass(slots=True)
class _Transaction:
    envelope: Envelope
    queue_id: str
    spool: Spool | None = None
    header_octets: int = 0
    names: list[bytes] | None = None
    """The lower-case name of every header field, in order (for the MTA's indices)."""
    starts: list[int] | None = None
    """Where each field starts in the spool."""
    problem: Reply | None = None
    """A bound the message went past: its end gets this reply."""
    in_body: bool = False


class MilterSession:
    def __init__(
        self, host: MilterHost, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.host = host
        self.state = host.state
        self.reader = reader
        self.writer = writer
        self.packets = codec.PacketReader(MILTER_MAX_PACKET)
        self._held = 0  # octets of `packets` counted in the host's packet budget
        self.negotiated = False
        self.steps = 0
        self.macros = MacroSets()
        self.client: Client | None = None
        self.passthrough = False
        self.tx: _Transaction | None = None
        self._loop = asyncio.get_running_loop()
        self._waiting_since: float | None = None
        """When the read in progress began (None: not reading, a step is being handled)."""
        self._idle_out = False
        self._watchdog: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ the connection
    async def run(self) -> None:
        stats = self.host.stats
        self._watchdog = self._loop.call_later(MILTER_IDLE_TIMEOUT, self._watch)
        try:
            while True:
                found = self.packets.next_packet()
                if found is not None:  # one already read (Postfix sends headers in a burst)
                    event: codec.Event | None = codec.decode(*found)
                else:
                    event = await self._next()
                if event is None or isinstance(event, codec.Quit):
                    break
                out = self._quick(event)
                if out is None:
                    out = await self._handle(event)
                if out:
                    self.writer.write(out)
                    await self.writer.drain()
        except MilterError as err:
            stats.incr(f"milter.errors.{err.reason}")
            logs.event("milter error", logging.WARNING, reason=str(err))
        except TimeoutError:
            stats.incr("milter.errors.timeout")
        except ConnectionError:
            stats.incr("milter.errors.connection")
        except Exception as exc:  # a bug of ours: this connection ends, the MTA's default
            stats.incr("milter.errors.internal")  # action (tempfail) applies, others go on
            logs.event("milter error", logging.ERROR, **logs.failure(exc))
        finally:
            self._watchdog.cancel()
            self._watchdog = None
            self._end_connection()
            self.writer.close()

    def _watch(self) -> None:
        """The idle bound (`MILTER_IDLE_TIMEOUT` waiting for the MTA), kept by one timer per
        connection that looks at the read in progress, not a timeout armed for each read
        (that was a fifth of the protocol's CPU per message)."""
        since = self._waiting_since
        now = self._loop.time()
        if since is not None and now - since >= MILTER_IDLE_TIMEOUT:
            self._idle_out = True
            self.writer.transport.abort()  # the read ends; `_next` raises TimeoutError
            return
        if self._watchdog is not None:  # else the connection has ended
            due = (since if since is not None else now) + MILTER_IDLE_TIMEOUT
            self._watchdog = self._loop.call_at(due, self._watch)

    async def _next(self) -> codec.Event | None:
        """The next packet's event; None when the MTA closed between packets."""
        while True:
            found = self.packets.next_packet()
            if found is not None:
                return codec.decode(*found)
            # the packets taken out leave the budget once per read, not once per packet
            self._hold(self.packets.buffered)
            self._waiting_since = self._loop.time()
            try:
                data = await self.reader.read(MILTER_READ_SIZE)
            finally:
                self._waiting_since = None
            if self._idle_out:
                raise TimeoutError
            if not data:
                if self.packets.buffered:
                    raise MilterError("truncated", f"{self.packets.buffered} octets")
                return None
            self._hold(self.packets.buffered + len(data))
            self.packets.feed(data)

    def _hold(self, octets: int) -> None:
        """Count `octets` of buffered packet in the host's packet budget (all connections
        together: server.spool_memory_total); a connection that would go past it is closed,
        since a packet, unlike a message body, cannot go to a file."""
        more = octets - self._held
        if more > 0 and not self.host.packet_budget.take(more):
            raise MilterError("memory", f"{octets} octets of packet past server.spool_memory_total")
        if more < 0:
            self.host.packet_budget.give(-more)
        self._held = octets

    def _end_connection(self) -> None:
        self._hold(0)
        self._end_transaction()
        if self.client is not None:
            self.state.pipeline.disconnect(self.client)
            self.client = None
        self.passthrough = False

    def _end_transaction(self) -> None:
        if self.tx is not None and self.tx.spool is not None:
            self.tx.spool.close()
        self.tx = None

    # ----------------------------------------------------------------------- the steps
    def _quick(self, ev: codec.Event) -> bytes | None:
        """The most frequent steps, which no check waits on: macros, and the header fields
        and body chunks of a transaction under way when the MTA expects no answer to them
        (over half the packets of a message). Handled without a coroutine or a chain of type
        tests; None for every other step (`_handle`)."""
        if isinstance(ev, codec.Macros):
            if not self.negotiated:
                return None
            self.macros.update(ev)
            return b""
        tx = self.tx  # a transaction: negotiated, connected, not passed through
        if tx is None:
            return None
        if isinstance(ev, codec.Header):
            if tx.in_body or not self.steps & codec.P_NR_HDR:
                return None
            self._header(tx, ev)
            return b""
        if isinstance(ev, codec.Body) and self.steps & codec.P_NR_BODY:
            self._body(tx, ev.chunk)
            return b""
        return None

    async def _handle(self, ev: codec.Event) -> bytes:
        if isinstance(ev, codec.OptNeg):
            return self._optneg(ev)
        if not self.negotiated:
            raise MilterError("bad_sequence", "no option negotiation first")
        if isinstance(ev, codec.Macros):
            self.macros.update(ev)
            return b""
        if isinstance(ev, codec.Abort):
            self._end_transaction()
            return b""
        if isinstance(ev, codec.QuitNewConnection):
            self._end_connection()
            return b""
        if isinstance(ev, codec.Connect):
            return await self._connect(ev)
        if self.passthrough:
            return codec.ACCEPT  # a local submission: not ours to check
        client = self.client
        if client is None:
            raise MilterError("bad_sequence", f"{type(ev).__name__} before connect")
        if isinstance(ev, codec.HeloName):
            event = Helo(ev.name, extended=True)
            answer = await self._stage("helo", client, event)
            if answer == codec.CONTINUE:
                client.helo = ev.name
            return answer
        if isinstance(ev, codec.Mail):
            return await self._mail(client, ev)
        tx = self.tx
        if tx is None:
            # the MTA goes on after a MAIL that was refused (by us or another milter): nothing
            # to check, the steps that wait for an answer get one
            return b"" if self._no_answer(ev) else codec.CONTINUE
        if isinstance(ev, codec.Rcpt):
            return await self._rcpt(client, tx, ev)
        if isinstance(ev, codec.Data):
            return await self._stage("data", client)
        if isinstance(ev, codec.Header):
            if tx.in_body:
                raise MilterError("bad_sequence", "a header after the end of headers")
            self._header(tx, ev)
            return b"" if self._no_answer(ev) else codec.CONTINUE
        if isinstance(ev, codec.EndOfHeaders):
            self._body(tx, b"")
            return b"" if self._no_answer(ev) else codec.CONTINUE
        if isinstance(ev, codec.Body):
            self._body(tx, ev.chunk)
            return b"" if self._no_answer(ev) else codec.CONTINUE
        if isinstance(ev, codec.EndOfMessage):
            self._body(tx, ev.chunk)
            try:
                return await self._end_of_message(client, tx)
            finally:
                self._end_transaction()
        return codec.CONTINUE  # an unknown SMTP command: Postfix refuses it already

    def _no_answer(self, ev: codec.Event) -> bool:
        """A step the MTA expects no answer to (as negotiated)."""
        steps = self.steps
        return (
            (isinstance(ev, codec.Header) and bool(steps & codec.P_NR_HDR))
            or (isinstance(ev, codec.EndOfHeaders) and bool(steps & codec.P_NR_EOH))
            or (isinstance(ev, codec.Body) and bool(steps & codec.P_NR_BODY))
        )

    def _optneg(self, ev: codec.OptNeg) -> bytes:
        if self.negotiated:
            raise MilterError("bad_sequence", "a second option negotiation")
        if ev.version < codec.VERSION:
            raise MilterError("bad_version", str(ev.version))
        self.negotiated = True
        wanted = codec.WANTED_STEPS
        if not self.state.pipeline.runs("data"):
            wanted |= codec.P_NODATA
        self.steps = ev.protocol & wanted
        actions = ev.actions & codec.WANTED_ACTIONS
        macros = codec.WANTED_MACROS if actions & codec.ACT_SETSYMLIST else None
        return codec.encode_optneg(actions, self.steps, macros)

    async def _connect(self, ev: codec.Connect) -> bytes:
        if self.client is not None or self.passthrough:
            raise MilterError("bad_sequence", "a second connect")
        if ev.family not in "46":
            self.passthrough = True
            return codec.ACCEPT
        # Sendmail writes an IPv6 address as an address literal's "IPv6:2001:db8::1"
        address = ev.address.removeprefix("IPv6:")
        try:
            self.client = Client(address, ev.port)
        except ValueError:
            raise MilterError("bad_connect", f"address {ev.address!r}") from None
        self.host.stats.incr("milter.connections")
        return await self._stage("connect", self.client)

    async def _mail(self, client: Client, ev: codec.Mail) -> bytes:
        self._end_transaction()
        address = arguments.path(ev.args[0])
        size, body, utf8 = arguments.mail_params(ev.args[1:])
        event = MailFrom(address, size, body, utf8)
        queue_id = self.macros.get("i")
        self.tx = _Transaction(Envelope(address, body=body, smtputf8=utf8), queue_id)
        answer = await self._stage("mail", client, event)
        if answer != codec.CONTINUE:
            self._end_transaction()
        return answer

    async def _rcpt(self, client: Client, tx: _Transaction, ev: codec.Rcpt) -> bytes:
        address = arguments.path(ev.args[0])
        if self.macros.get("{rcpt_mailer}", "R") == "error":
            return await self._refused_by_mta(client, address)
        _local, at, domain = address.rpartition("@")
        event = RcptTo(address, ascii_lower(domain) if at else "")
        answer = await self._stage("rcpt", client, event)
        if answer == codec.CONTINUE and len(tx.envelope.rcpt_to) < (
            self.state.settings.smtp.max_recipients
        ):
            tx.envelope.rcpt_to.append(address)
        return answer

    async def _refused_by_mta(self, client: Client, address: str) -> bytes:
        """A recipient the MTA refused itself (SMFIP_RCPT_REJ): an unknown user counts for
        harvest detection as one the directory refused; any refusal feeds the strikes."""
        status = self.macros.get("{rcpt_host}", "R")
        self.host.stats.incr("milter.rcpt_refused_by_mta")
        detector = self.state.detector
        if detector is not None and status.startswith(("5.1.", "4.1.")):
            await detector.unknown(client)
        client.errors += 1
        code = 550 if status.startswith("5") else 450
        refused = reply(code, None, f"recipient <{address}> refused by the MTA")
        await self._settle(
            self.state.pipeline.run("rejected", client, rejected_event("mta", refused, "RCPT"))
        )
        return codec.CONTINUE

    def _header(self, tx: _Transaction, ev: codec.Header) -> None:
        if tx.problem is not None:
            return
        if tx.names is None or tx.starts is None:
            tx.names, tx.starts = [], []
        sep = b":" if self.steps & codec.P_HDR_LEADSPC else b": "
        value = ev.value.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        line = ev.name + sep + value + b"\r\n"
        tx.header_octets += len(line)
        if tx.header_octets > self.state.settings.smtp.max_header_size:
            tx.problem = R_HEADER_TOO_BIG
        elif len(tx.names) >= MILTER_MAX_HEADERS:
            tx.problem = R_TOO_MANY_HEADERS
        else:
            spool = self._spool(tx)
            tx.names.append(ascii_lower(ev.name.decode("latin-1")).encode("latin-1"))
            tx.starts.append(spool.size)
            spool.write(line)

    def _body(self, tx: _Transaction, chunk: bytes) -> None:
        """Body octets (the end of headers first puts the empty line that ends them)."""
        spool = self._spool(tx)
        if not tx.in_body:
            tx.in_body = True
            spool.write(b"\r\n")
        if tx.problem is not None:
            return
        if spool.size + len(chunk) > self.state.settings.smtp.max_message_size:
            tx.problem = R_TOO_BIG
            return
        spool.write(chunk)

    def _spool(self, tx: _Transaction) -> Spool:
        if tx.spool is None:
            tx.spool = self.host.new_spool()
        return tx.spool

    async def _end_of_message(self, client: Client, tx: _Transaction) -> bytes:
        stats = self.host.stats
        spool = self._spool(tx)
        if tx.problem is not None:
            stats.incr("milter.messages.refused")
            return await self._refuse(client, Decision(tx.problem, reason="size"), "END-OF-DATA")
        limit = self.state.settings.smtp.max_header_size
        # Postfix names the queue ID only after the first valid RCPT (by default): the one
        # sent with the end of message, else the one known at MAIL
        queue_id = self.macros.get("i") or tx.queue_id
        message = Message(tx.envelope, spool, queue_id, max_header=limit)
        headers = await message.read_headers()
        verdict: Verdict
        if headers.defect:
            code = (552, "5.3.4") if headers.too_big else (554, "5.6.0")
            verdict = Decision(reply(*code, f"Message rejected: {headers.defect}"), reason="header")
        else:
            verdict = await self._settle(self.state.pipeline.run("message", client, message))
        if refusal_of(verdict) is not None:
            stats.incr("milter.messages.refused")
            return await self._refuse(client, verdict, "END-OF-DATA")
        stats.incr("milter.messages.accepted")
        return self._edits(tx, message) + codec.CONTINUE

    def _edits(self, tx: _Transaction, message: Message) -> bytes:
        """The header changes the checks made: fields left out are deleted (the last first, so
        that no index shifts), fields put in front are inserted at the top, in order."""
        out = []
        names, starts = tx.names or [], tx.starts or []
        index = {start: i for i, start in enumerate(starts)}
        nth_of = arguments.occurrences(names) if message.omit else []
        for start, end in reversed(message.omit):
            first = index.get(start)
            if first is None:
                raise ValueError(f"a removed range {start}-{end} is not a header field")
            i = first
            while i < len(starts) and starts[i] < end:
                # the MTA compares names without case: the lower-case one names the field
                out.append((i, codec.encode_delete_header(nth_of[i], names[i])))
                i += 1
        edits = [edit for _, edit in sorted(out, reverse=True)]
        lead = bool(self.steps & codec.P_HDR_LEADSPC)  # else the MTA puts ": " itself
        for position, (name, value) in enumerate(arguments.fields(message.trace)):
            value = value if lead else value.lstrip(b" ")
            edits.append(codec.encode_insert_header(position, name, value))
        return b"".join(edits)

    # ---------------------------------------------------------------------- verdicts
    async def _stage(self, stage: str, client: Client, *args: object) -> bytes:
        verdict = await self._settle(self.state.pipeline.run(stage, client, *args))
        if refusal_of(verdict) is None:
            return codec.CONTINUE
        return await self._refuse(client, verdict, _STAGE_VERB.get(stage, "CONNECT"))

    async def _settle(self, result: HookResult) -> Verdict:
        """A stage's verdict, awaited, and its delay (a tarpit) waited out."""
        verdict = await result if inspect.isawaitable(result) else result
        if isinstance(verdict, Decision) and verdict.delay:
            await asyncio.sleep(verdict.delay)
        return verdict

    async def _refuse(self, client: Client, verdict: Verdict, verb: str) -> bytes:
        """The reply for a refusal, after the `rejected` stage saw it (strikes, tarpit). A
        refusal that closes the session becomes a 421, which makes the MTA hang up."""
        refusal = refusal_of(verdict)
        assert refusal is not None
        reason = verdict.reason if isinstance(verdict, Decision) else "policy"
        close = isinstance(verdict, Decision) and verdict.close
        client.errors += 1
        self.host.stats.incr(f"milter.rejected.{reason or 'policy'}")
        after = await self._settle(
            self.state.pipeline.run("rejected", client, rejected_event(reason, refusal, verb))
        )
        if isinstance(after, Decision) and after.close:
            refusal, close = after.reply or R_CLOSING, True
        if close and refusal.code != 421:
            refusal = Reply(421, "4.7.0", refusal.lines)
        if logs.enabled():
            logs.event(
                "refused",
                client=client.address,
                helo=client.helo,
                queue_id=self.macros.get("i") or None,
                command=verb,
                code=refusal.code,
                reason=reason,
                reply=refusal.text,
            )
        return codec.encode_reply(refusal)
