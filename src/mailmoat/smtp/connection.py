"""The sans-IO SMTP server engine: bytes in, events out; replies in, bytes out.

No sockets, no asyncio, no clock. The transport feeds `receive_data()`, drains `next_event()`
until it returns `NEED_DATA` or `PAUSED`, answers each `Command` with `accept()` or `send()`,
and writes `data_to_send()`. When `closing` is set, it flushes and closes.

Everything the client can make the engine hold is bounded by its `Limits`: a command line, a
message line, the message size. Input that arrives while a reply is pending stays in the
input buffer; the transport watches `buffered` and pauses reading.

This is the glue: the states and their transitions are `state.py`'s, the command readers
`readers.py`'s, the message content `data.py`'s, the replies `writers.py`'s.
"""

from __future__ import annotations

import enum

from mailmoat.smtp.data import DataEnded, DataReader
from mailmoat.smtp.envelope import Envelope
from mailmoat.smtp.events import (
    Command,
    ConnectionClosed,
    DataChunk,
    DataStart,
    Event,
    Helo,
    MailFrom,
    MessageAborted,
    MessageEnd,
    Quit,
    RcptTo,
    Rejected,
    Rset,
    StartTls,
)
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.readers import (
    EIGHT_BIT_VERBS,
    NOT_IMPLEMENTED,
    CommandLineReader,
    read_bare,
    read_command,
    read_expn,
    read_helo,
    read_help,
    read_mail,
    read_noop,
    read_rcpt,
    read_vrfy,
)
from mailmoat.smtp.replies import Reply
from mailmoat.smtp.state import (
    COMMAND_STATES,
    ENDS_SESSION,
    JUNK,
    LAST_IN_GROUP,
    PHASE,
    SEQUENCE,
    TRANSITIONS,
    Phase,
    State,
    Trigger,
    advance,
)
from mailmoat.smtp.writers import (
    R_8BIT_COMMAND,
    R_NOT_IMPLEMENTED,
    R_OK,
    R_PREGREET,
    R_SYNC,
    R_TLS_ACTIVE,
    R_TLS_UNAVAILABLE,
    R_TOO_MANY_ERRORS,
    R_TOO_MANY_JUNK,
    R_TOO_MANY_UNKNOWN,
    R_UNKNOWN,
    STANDARD,
    ehlo_keywords,
    host_reply,
)

__all__ = ["CLOSED", "NEED_DATA", "PAUSED", "Phase", "ServerConnection"]

# The states as module names: in Python 3.11 an Enum class attribute costs about four times a
# global, and the engine looks at its state a few dozen times a message.
_GREETING, _DATA, _TLS, _CLOSED = State.GREETING, State.DATA, State.TLS, State.CLOSED


class _Sentinel(enum.Enum):
    NEED_DATA = "need data"
    PAUSED = "paused"  # a command waits for its reply
    CLOSED = "closed"


NEED_DATA = _Sentinel.NEED_DATA
PAUSED = _Sentinel.PAUSED
CLOSED = _Sentinel.CLOSED


class ServerConnection:
    """One SMTP server session as a state machine."""

    def __init__(
        self,
        limits: Limits,
        hostname: str,
        *,
        tls_available: bool = False,
        tls_active: bool = False,
    ) -> None:
        self.limits = limits
        self.hostname = hostname
        self.tls_available = tls_available
        self.tls_active = tls_active
        self.state = _GREETING
        self.helo: str | None = None
        self.esmtp = False
        self.envelope: Envelope | None = None
        self.closing = False
        self.errors = 0
        self.unknown_commands = 0
        self.junk_commands = 0
        self.discarded_after_starttls = 0
        self._in = bytearray()
        self._out = bytearray()
        self._events: list[Event] = []  # rarely more than two; a deque costs 600 bytes
        self._lines = CommandLineReader(limits.max_command_line)
        self._data: DataReader | None = None  # in DATA only
        self._pending: Command | None = None
        self._pending_verb = ""
        self._sent_ahead = False  # the client sent more while a last-in-group command waited
        self._pregreet = False
        self._eof = False

    @property
    def phase(self) -> Phase:
        """What the client's bytes mean now (`state`, coarsely)."""
        return PHASE[self.state]

    # ------------------------------------------------------------------ input
    @property
    def buffered(self) -> int:
        """Unparsed client bytes held right now."""
        return len(self._in)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the client; b"" means the client closed its side."""
        if not data:
            self._eof = True
            return
        now = self.state
        if now is _CLOSED or self.closing:
            return
        if now is _GREETING:
            self._pregreet = True  # content is never looked at
            return
        if now is _TLS:
            self.discarded_after_starttls += len(data)
            return
        if self._pending is not None:
            verb = self._pending_verb
            if verb == "STARTTLS":
                self.discarded_after_starttls += len(data)
                return
            # Sent before the reply: allowed only for a pipelinable command in a PIPELINING
            # session (and after the end of data, as `_command` also allows).
            pipelining = self.esmtp and self.limits.pipelining
            if verb in LAST_IN_GROUP or (verb != "." and not pipelining):
                self._sent_ahead = True
        self._in += data

    # ----------------------------------------------------------------- output
    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    def greeting(self, text: str = "ESMTP", *, sent: bool = False) -> None:
        """Queue the 220 greeting (or the refusal of a client that spoke first). `sent`: the
        listener already wrote `greeting_bytes(hostname, text)` on the bare socket."""
        if self.state is not _GREETING:
            raise RuntimeError("greeting already sent")
        self.state = advance(self.state, Trigger.GREETED)
        if self._pregreet:
            self._reject("pregreet", R_PREGREET)
        elif not sent:
            self._out += host_reply(220, f"{self.hostname} {text}").to_bytes()

    def accept(self) -> None:
        """Answer the pending command with its standard positive reply."""
        ev = self._pending
        if ev is None:
            raise RuntimeError("no command is waiting for a reply")
        self.send(self._standard_reply(ev))

    def send(self, answer: Reply, *, close: bool = False) -> None:
        """Answer the pending command. A positive reply applies the command; `close`
        (or a 421) closes the session after this reply."""
        ev = self._pending
        if ev is None:
            raise RuntimeError("no command is waiting for a reply")
        # The events are final classes: `type(ev) is` is the cheap isinstance here.
        kind = type(ev)
        code = answer.code
        positive = code < 400
        if positive and kind is DataStart and code != 354:
            raise ValueError("DATA can only be accepted with 354")
        if positive and kind is StartTls and code != 220:
            raise ValueError("STARTTLS can only be accepted with 220")
        self._pending = None
        self._pending_verb = ""
        self._out += answer.to_bytes()
        if positive or kind is MessageEnd:  # the end of data ends the transaction anyway
            self._apply(ev)
        if not positive and kind is not Quit:
            self._count_error()
        if close or code == 421 or kind is Quit:
            self.closing = True

    def tls_started(self) -> None:
        """The transport finished the TLS handshake: a new session begins (RFC 3207 §4.2)."""
        if self.state is not _TLS:
            raise RuntimeError("STARTTLS was not accepted")
        self.state = advance(self.state, Trigger.TLS_STARTED)
        self.tls_active = True
        self.helo = None
        self.esmtp = False
        self.envelope = None

    def extensions(self) -> list[str]:
        """The EHLO keywords this session offers."""
        return ehlo_keywords(self.limits, starttls=self.tls_available and not self.tls_active)

    # ----------------------------------------------------------------- events
    def next_event(self) -> Event | _Sentinel:
        if self._events:
            return self._events.pop(0)
        now = self.state
        if now is _CLOSED:
            return CLOSED
        if self.closing:
            self.state = advance(now, Trigger.CLOSED)
            return CLOSED
        if self._pending is not None or now is _TLS:
            return PAUSED
        if self._sent_ahead:
            self._sent_ahead = False
            self._reject("pipelining", R_SYNC)
            return self._events.pop(0)
        if now is _DATA:
            ev = self._next_data_event()
        elif now in COMMAND_STATES:
            ev = self._next_command()
        else:
            ev = NEED_DATA
        if ev is NEED_DATA and self._eof:
            if self.state is _DATA:
                self._events.append(MessageAborted("client disconnected"))
            self._events.append(ConnectionClosed())
            self.state = advance(self.state, Trigger.CLOSED)
            return self._events.pop(0)
        return ev

    # ------------------------------------------------------------ internals
    def _reject(self, reason: str, answer: Reply, command: str = "") -> None:
        self._queue(Rejected(reason, answer, command))

    def _queue(self, refused: Rejected, *, close: bool = False) -> None:
        """Queue an engine-made error reply and the event that reports it; count it, or
        close the session (`close`, or a reason in `state.ENDS_SESSION`)."""
        self._out += refused.reply.to_bytes()
        self._events.append(refused)
        reason = refused.reason
        if close or reason in ENDS_SESSION:
            self.closing = True
            return
        if reason == "too_many_recipients":
            return  # RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction
        if reason == "unknown_command":
            self.unknown_commands += 1
            if self.unknown_commands >= self.limits.max_unknown_commands:
                self._reject("too_many_unknown", R_TOO_MANY_UNKNOWN)
                return
        self._count_error()

    def _refuse(self, refused: Rejected) -> Event:
        """A reader's refusal: queue it, and report it first."""
        self._queue(refused)
        return self._events.pop(0)

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.limits.max_errors and not self.closing:
            self._reject("too_many_errors", R_TOO_MANY_ERRORS)

    def _await(self, verb: str, ev: Command) -> Command:
        self._pending = ev
        self._pending_verb = verb
        return ev

    def _next_command(self) -> Event | _Sentinel:
        if not self._in:  # the usual case after a command: nothing more yet
            return NEED_DATA
        line = self._lines(self._in)
        if line is None:
            return NEED_DATA
        if isinstance(line, Rejected):
            return self._refuse(line)
        return self._command(line, ahead=bool(self._in))

    def _command(self, raw: bytes, *, ahead: bool) -> Event:
        read = read_command(raw, helo_done=self.helo is not None)
        if isinstance(read, Rejected):
            return self._refuse(read)
        verb, arg, eight_bit = read
        pipelining = self.esmtp and self.limits.pipelining
        if ahead and (verb in LAST_IN_GROUP or not pipelining):
            self._in.clear()
            return self._refuse(Rejected("pipelining", R_SYNC, verb[:16]))
        if eight_bit and verb not in EIGHT_BIT_VERBS:
            return self._refuse(Rejected("8bit", R_8BIT_COMMAND, verb[:16]))
        handler = _HANDLERS.get(verb)
        if handler is None:
            if verb in NOT_IMPLEMENTED:
                return self._refuse(Rejected("not_implemented", R_NOT_IMPLEMENTED, verb))
            return self._refuse(Rejected("unknown_command", R_UNKNOWN, verb[:16]))
        ev = handler(self, verb, arg, eight_bit)
        if isinstance(ev, Rejected):
            return self._refuse(ev)
        assert isinstance(ev, Command)
        if verb in JUNK:
            self.junk_commands += 1
            if self.junk_commands > self.limits.max_junk_commands:
                return self._refuse(Rejected("too_many_junk", R_TOO_MANY_JUNK, verb))
        return self._await(verb, ev)

    # One handler per verb: the state's sequence rule (SEQUENCE) and the reader, in the order
    # that decides which refusal a command that breaks both gets.
    def _cmd_helo(self, verb: str, arg: str, eight_bit: bool) -> Event:
        return read_helo(arg, extended=verb == "EHLO", limits=self.limits)

    def _cmd_mail(self, verb: str, arg: str, eight_bit: bool) -> Event:
        answer = SEQUENCE[self.state].get(verb)
        if answer is not None:
            return Rejected("bad_sequence", answer, verb)
        return read_mail(arg, eight_bit, esmtp=self.esmtp, limits=self.limits)

    def _cmd_rcpt(self, verb: str, arg: str, eight_bit: bool) -> Event:
        answer = SEQUENCE[self.state].get(verb)
        if answer is not None:
            return Rejected("bad_sequence", answer, verb)
        envelope = self.envelope
        assert envelope is not None
        return read_rcpt(
            arg,
            eight_bit,
            esmtp=self.esmtp,
            smtputf8=envelope.smtputf8,
            recipients=len(envelope.rcpt_to),
            limits=self.limits,
        )

    def _cmd_bare(self, verb: str, arg: str, eight_bit: bool) -> Event:
        """DATA, RSET, QUIT: no argument, then (DATA) the sequence."""
        ev = read_bare(verb, arg)
        if type(ev) is Rejected:
            return ev
        answer = SEQUENCE[self.state].get(verb)
        return ev if answer is None else Rejected("bad_sequence", answer, verb)

    def _cmd_noop(self, verb: str, arg: str, eight_bit: bool) -> Event:
        return read_noop(arg)

    def _cmd_vrfy(self, verb: str, arg: str, eight_bit: bool) -> Event:
        return read_vrfy(arg)

    def _cmd_expn(self, verb: str, arg: str, eight_bit: bool) -> Event:
        return read_expn(arg)

    def _cmd_help(self, verb: str, arg: str, eight_bit: bool) -> Event:
        return read_help(arg)

    def _cmd_starttls(self, verb: str, arg: str, eight_bit: bool) -> Event:
        ev = read_bare(verb, arg)
        if type(ev) is Rejected:
            return ev
        if self.tls_active:
            return Rejected("bad_sequence", R_TLS_ACTIVE, verb)
        if not self.tls_available or not self.esmtp:
            return Rejected("not_implemented", R_TLS_UNAVAILABLE, verb)
        # RFC 3207 §4.2 / CVE-2011-0411: nothing sent after STARTTLS counts
        self.discarded_after_starttls += len(self._in)
        self._in.clear()
        return ev

    # ------------------------------------------------------------------- DATA
    def _next_data_event(self) -> Event | _Sentinel:
        assert self._data is not None
        got = self._data(self._in)
        if got is None:
            return NEED_DATA
        if isinstance(got, DataChunk):
            return got
        if isinstance(got, DataEnded):
            self._data = None
            self.state = advance(self.state, Trigger.DATA_END)
            end = self._await(".", MessageEnd(got.size))
            if got.content:
                self._events.append(end)
                return DataChunk(got.content)
            return end
        self._events.append(MessageAborted(got.reason))
        self._queue(Rejected(got.reason, got.reply, "END-OF-DATA"), close=got.close)
        self._data = None
        self.state = advance(self.state, Trigger.DATA_ABORTED)
        self.envelope = None
        return self._events.pop(0)

    # ---------------------------------------------------------- transitions
    def _apply(self, ev: Command) -> None:
        """An accepted command (or the end of data, answered): the state moves, and the
        session's data with it."""
        kind = type(ev)
        # the table's move, looked up here (a few per message); `advance` for the rest
        self.state = TRANSITIONS[self.state].get(kind) or advance(self.state, kind)
        if kind is MailFrom:
            assert isinstance(ev, MailFrom)
            self.envelope = Envelope(
                mail_from=ev.address, body=ev.body, smtputf8=ev.smtputf8, declared_size=ev.size
            )
        elif kind is RcptTo:
            assert isinstance(ev, RcptTo) and self.envelope is not None
            self.envelope.rcpt_to.append(ev.address)
        elif kind is Helo:
            assert isinstance(ev, Helo)
            self.helo = ev.name
            self.esmtp = ev.extended
            self.envelope = None
        elif kind is DataStart:
            self._data = DataReader(self.limits)
        elif kind is StartTls:
            self._in.clear()
        elif kind is Rset or kind is MessageEnd:
            self.envelope = None

    def _standard_reply(self, ev: Command) -> Reply:
        if type(ev) is Helo:
            assert isinstance(ev, Helo)
            if not ev.extended:
                return host_reply(250, self.hostname)
            return host_reply(250, self.hostname, *self.extensions())
        return STANDARD.get(type(ev), R_OK)


_HANDLERS = {
    "EHLO": ServerConnection._cmd_helo,
    "HELO": ServerConnection._cmd_helo,
    "MAIL": ServerConnection._cmd_mail,
    "RCPT": ServerConnection._cmd_rcpt,
    "DATA": ServerConnection._cmd_bare,
    "RSET": ServerConnection._cmd_bare,
    "NOOP": ServerConnection._cmd_noop,
    "QUIT": ServerConnection._cmd_bare,
    "VRFY": ServerConnection._cmd_vrfy,
    "EXPN": ServerConnection._cmd_expn,
    "HELP": ServerConnection._cmd_help,
    "STARTTLS": ServerConnection._cmd_starttls,
}
