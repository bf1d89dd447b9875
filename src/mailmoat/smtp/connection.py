"""The sans-IO SMTP server engine: bytes in, events out; replies in, bytes out.

No sockets, no asyncio, no clock. The transport feeds `receive_data()`, drains `next_event()`
until it returns `NEED_DATA` or `PAUSED`, answers each `Command` with `accept()` or `send()`,
and writes `data_to_send()`. When `closing` is set, it flushes and closes.

Everything the client can make the engine hold is bounded by its `Limits`: a
command line, a message line, the message size. Input that arrives while a reply is pending
stays in the input buffer; the transport watches `buffered` and pauses reading.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from typing import Literal

from mailmoat.smtp import _abnf
from mailmoat.smtp.envelope import Envelope
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
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.replies import Reply, reply


class Phase(enum.Enum):
    GREETING = "greeting"  # connected, greeting not sent yet
    COMMAND = "command"
    DATA = "data"  # between 354 and CRLF.CRLF
    TLS = "tls"  # STARTTLS accepted, waiting for the handshake
    CLOSED = "closed"


# The phases as module names too: in Python 3.11 an Enum class attribute costs about four
# times a global, and the engine looks at its phase a few dozen times a message.
_IN_GREETING, _IN_COMMAND, _IN_DATA, _IN_TLS, _IN_CLOSED = Phase


class _Sentinel(enum.Enum):
    NEED_DATA = "need data"
    PAUSED = "paused"  # a command waits for its reply
    CLOSED = "closed"


NEED_DATA = _Sentinel.NEED_DATA
PAUSED = _Sentinel.PAUSED
CLOSED = _Sentinel.CLOSED

# RFC 2920 §3.1: these may only be the last command in a pipelined group. STARTTLS is handled
# apart: what follows it is discarded, as RFC 3207 §4.2 asks, instead of being an error.
_LAST_IN_GROUP = frozenset({"EHLO", "HELO", "DATA", "VRFY", "EXPN", "NOOP", "QUIT", "HELP"})
# Commands that move no mail (Postfix's "junk commands"); a session may send only so many.
_JUNK = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})
_NOT_IMPLEMENTED = frozenset(
    {"AUTH", "BDAT", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML", "VERB", "XCLIENT", "XFORWARD"}
)

# Engine replies. Policy replies are the application's.
R_SYNTAX_LINE = reply(500, "5.5.2", "Syntax error: command line too long")
R_BARE_EOL = reply(500, "5.5.2", "Syntax error: bare CR or LF, lines must end with CRLF")
R_NUL = reply(500, "5.5.2", "Syntax error: NUL character in command")
R_BAD_UTF8 = reply(500, "5.5.2", "Syntax error: invalid UTF-8 in command")
R_8BIT_COMMAND = reply(500, "5.5.2", "Syntax error: non-ASCII characters in this command")
R_EMPTY = reply(500, "5.5.2", "Syntax error: empty command")
R_8BIT = reply(553, "5.6.7", "Non-ASCII address needs the SMTPUTF8 parameter")
R_UNKNOWN = reply(500, "5.5.1", "Command unrecognized")
R_NOT_IMPLEMENTED = reply(502, "5.5.1", "Command not implemented")
R_NEED_HELO = reply(503, "5.5.1", "Error: send HELO/EHLO first")
R_NEED_MAIL = reply(503, "5.5.1", "Error: need MAIL command")
R_NEED_RCPT = reply(503, "5.5.1", "Error: need RCPT command")
R_NESTED_MAIL = reply(503, "5.5.1", "Error: nested MAIL command")
R_TLS_ACTIVE = reply(503, "5.5.1", "Error: TLS already active")
R_TLS_UNAVAILABLE = reply(502, "5.5.1", "Error: STARTTLS not offered")
R_PARAMS = reply(555, "5.5.4", "Unsupported or malformed MAIL/RCPT parameter")
R_TOO_MANY_RCPTS = reply(452, "4.5.3", "Error: too many recipients")
R_SYNC = reply(554, "5.5.0", "Error: SMTP protocol synchronization")
R_PREGREET = reply(554, "5.5.0", "Error: client sent data before the greeting")
R_NON_SMTP = reply(554, "5.7.0", "Error: non-SMTP input, closing connection")
R_TOO_MANY_ERRORS = reply(421, "4.7.0", "Error: too many errors, closing connection")
R_TOO_MANY_UNKNOWN = reply(421, "4.7.0", "Error: too many unknown commands, closing connection")
R_TOO_MANY_JUNK = reply(421, "4.7.0", "Error: too many commands, closing connection")
R_DATA_BARE_EOL = reply(
    554, "5.6.0", "Message rejected: bare CR or LF in message data, lines must end with CRLF"
)
R_DATA_NUL = reply(554, "5.6.0", "Message rejected: NUL character in message data")
# The standard positive replies (`accept()`).
R_OK = reply(250, "2.0.0", "Ok")
R_MAIL_OK = reply(250, "2.1.0", "Ok")
R_RCPT_OK = reply(250, "2.1.5", "Ok")
R_GO_AHEAD = reply(354, None, "End data with <CR><LF>.<CR><LF>")
R_BYE = reply(221, "2.0.0", "Bye")
R_CANNOT_VRFY = reply(252, "2.5.0", "Cannot VRFY user, but will accept message and try delivery")
R_HELP = reply(214, "2.0.0", "See RFC 5321: EHLO MAIL RCPT DATA RSET NOOP QUIT VRFY")
R_TLS_GO_AHEAD = reply(220, "2.0.0", "Ready to start TLS")


_STANDARD: dict[type[Command], Reply] = {
    MailFrom: R_MAIL_OK,
    RcptTo: R_RCPT_OK,
    DataStart: R_GO_AHEAD,
    Quit: R_BYE,
    Vrfy: R_CANNOT_VRFY,
    Expn: R_CANNOT_VRFY,
    Help: R_HELP,
    StartTls: R_TLS_GO_AHEAD,
}
"""`accept()`'s reply for each command but HELO/EHLO (R_OK for the rest)."""


def _syntax(usage: str) -> Reply:
    return reply(501, "5.5.4", f"Syntax: {usage}")


@functools.lru_cache(maxsize=64)
def greeting_bytes(hostname: str, text: str = "ESMTP") -> bytes:
    """The 220 greeting as `ServerConnection.greeting` writes it."""
    return _host_reply(220, f"{hostname} {text}").to_bytes()


def _host_reply(code: int, *lines: str) -> Reply:
    """Greeting and HELO/EHLO replies: made of the host name and the settings, so the same
    few in every session, made (and serialised) once."""
    return reply(code, None, *lines)


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
        self.phase = _IN_GREETING
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
        self._pending: Command | None = None
        self._pending_verb = ""
        self._sent_ahead = False  # the client sent more while a last-in-group command waited
        self._pregreet = False
        self._eof = False
        self._skipping_line = False  # discarding the rest of an over-long command line
        # DATA state
        self._line_start = True  # the next byte starts a line that followed a real CRLF
        self._data_size = 0
        self._data_problem: tuple[str, Reply] | None = None

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
        if self.phase is _IN_CLOSED or self.closing:
            return
        if self.phase is _IN_GREETING:
            self._pregreet = True  # content is never looked at
            return
        if self.phase is _IN_TLS:
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
            if verb in _LAST_IN_GROUP or (verb != "." and not pipelining):
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
        if self.phase is not _IN_GREETING:
            raise RuntimeError("greeting already sent")
        self.phase = _IN_COMMAND
        if self._pregreet:
            self._reject("pregreet", R_PREGREET, close=True)
        elif not sent:
            self._write(_host_reply(220, f"{self.hostname} {text}"))

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
        if positive:
            self._apply(ev)
        elif kind is not Quit:
            self._count_error()
        if kind is MessageEnd:
            self.envelope = None
        if close or code == 421 or kind is Quit:
            self.closing = True

    def tls_started(self) -> None:
        """The transport finished the TLS handshake: a new session begins (RFC 3207 §4.2)."""
        if self.phase is not _IN_TLS:
            raise RuntimeError("STARTTLS was not accepted")
        self.phase = _IN_COMMAND
        self.tls_active = True
        self.helo = None
        self.esmtp = False
        self.envelope = None

    # ----------------------------------------------------------------- events
    def next_event(self) -> Event | _Sentinel:
        if self._events:
            return self._events.pop(0)
        if self.phase is _IN_CLOSED:
            return CLOSED
        if self.closing:
            self.phase = _IN_CLOSED
            return CLOSED
        if self._pending is not None or self.phase is _IN_TLS:
            return PAUSED
        if self._sent_ahead:
            self._sent_ahead = False
            self._reject("pipelining", R_SYNC, close=True)
            return self._events.pop(0)
        if self.phase is _IN_DATA:
            ev = self._next_data_event()
        elif self.phase is _IN_COMMAND:
            ev = self._next_command()
        else:
            ev = NEED_DATA
        if ev is NEED_DATA and self._eof:
            if self.phase is _IN_DATA:
                self._events.append(MessageAborted("client disconnected"))
            self._events.append(ConnectionClosed())
            self.phase = _IN_CLOSED
            return self._events.pop(0)
        return ev

    # ------------------------------------------------------------ internals
    def _write(self, answer: Reply) -> None:
        self._out += answer.to_bytes()

    def _reject(
        self, reason: str, answer: Reply, command: str = "", *, close: bool = False
    ) -> None:
        """Queue an engine-made error reply and the event that reports it."""
        self._write(answer)
        self._events.append(Rejected(reason, answer, command))
        if close:
            self.closing = True
            return
        if reason == "too_many_recipients":
            return  # RFC 5321 §4.5.3.1.10: the client sends the rest in another transaction
        if reason == "unknown_command":
            self.unknown_commands += 1
            if self.unknown_commands >= self.limits.max_unknown_commands:
                self._reject("too_many_unknown", R_TOO_MANY_UNKNOWN, close=True)
                return
        self._count_error()

    def _count_error(self) -> None:
        self.errors += 1
        if self.errors >= self.limits.max_errors and not self.closing:
            self._reject("too_many_errors", R_TOO_MANY_ERRORS, close=True)

    def _await(self, verb: str, ev: Command) -> Command:
        self._pending = ev
        self._pending_verb = verb
        return ev

    def _next_command(self) -> Event | _Sentinel:
        buf = self._in
        limit = self.limits.max_command_line
        while True:
            if not buf:
                return NEED_DATA
            if self._skipping_line:
                lf = buf.find(b"\n")
                if lf < 0:
                    buf.clear()
                    return NEED_DATA
                del buf[: lf + 1]
                self._skipping_line = False
                continue
            if buf.startswith(_abnf.TLS_RECORD_PREFIXES):
                buf.clear()
                self._reject("non_smtp", R_NON_SMTP, "TLS handshake", close=True)
                return self._events.pop(0)
            lf = buf.find(b"\n", 0, limit)
            if lf < 0:
                if len(buf) < limit:
                    return NEED_DATA
                lf = buf.find(b"\n")
                if lf < 0:
                    buf.clear()
                    self._skipping_line = True
                else:
                    del buf[: lf + 1]
                self._reject("line_too_long", R_SYNTAX_LINE)
                return self._events.pop(0)
            raw = bytes(buf[: lf + 1])
            del buf[: lf + 1]
            return self._command(raw, ahead=bool(buf))

    def _command(self, raw: bytes, *, ahead: bool) -> Event:
        line = raw[:-2]
        if not raw.endswith(b"\r\n") or b"\r" in line:
            self._reject("bare_eol", R_BARE_EOL)
            return self._events.pop(0)
        if b"\x00" in line:
            self._reject("nul", R_NUL)
            return self._events.pop(0)
        eight_bit = not line.isascii()
        try:
            text = line.decode("utf-8" if eight_bit else "ascii")
        except UnicodeDecodeError:
            self._reject("bad_utf8", R_BAD_UTF8)
            return self._events.pop(0)
        verb, _, arg = text.partition(" ")
        verb = verb.upper()
        # HTTP and friends anywhere; before HELO also header lines and binary junk.
        if not verb:
            self._reject("syntax", R_EMPTY)
            return self._events.pop(0)
        if verb in _abnf.non_smtp_verbs or (self.helo is None and not verb.isalpha()):
            self._reject("non_smtp", R_NON_SMTP, verb[:16], close=True)
            return self._events.pop(0)
        pipelining = self.esmtp and self.limits.pipelining
        if ahead and (verb in _LAST_IN_GROUP or not pipelining):
            self._in.clear()
            self._reject("pipelining", R_SYNC, verb[:16], close=True)
            return self._events.pop(0)
        if eight_bit and verb not in ("MAIL", "RCPT"):
            self._reject("8bit", R_8BIT_COMMAND, verb[:16])
            return self._events.pop(0)
        handler = _HANDLERS.get(verb)
        if handler is None:
            if verb in _NOT_IMPLEMENTED:
                self._reject("not_implemented", R_NOT_IMPLEMENTED, verb)
            else:
                self._reject("unknown_command", R_UNKNOWN, verb[:16])
            return self._events.pop(0)
        ev = handler(self, arg, eight_bit)
        if isinstance(ev, Command):
            if verb in _JUNK:
                self.junk_commands += 1
                if self.junk_commands > self.limits.max_junk_commands:
                    self._reject("too_many_junk", R_TOO_MANY_JUNK, verb, close=True)
                    return self._events.pop(0)
            return self._await(verb, ev)
        return ev

    # One handler per verb. Each returns a Command, or a Rejected event it queued.
    def _error(self, reason: str, answer: Reply, verb: str) -> Event:
        self._reject(reason, answer, verb)
        return self._events.pop(0)

    def _helo(self, arg: str, extended: bool) -> Event:
        verb = "EHLO" if extended else "HELO"
        # One printable token; whether it is a sensible name is policy, not grammar.
        name = arg.strip(" ")
        if not name or len(name) > self.limits.max_domain or not _is_printable_token(name):
            return self._error("syntax", _syntax(f"{verb} hostname"), verb)
        return Helo(name=name, extended=extended)

    def _cmd_ehlo(self, arg: str, eight_bit: bool) -> Event:
        return self._helo(arg, True)

    def _cmd_helo(self, arg: str, eight_bit: bool) -> Event:
        return self._helo(arg, False)

    def _cmd_mail(self, arg: str, eight_bit: bool) -> Event:
        if self.helo is None:
            return self._error("bad_sequence", R_NEED_HELO, "MAIL")
        if self.envelope is not None:
            return self._error("bad_sequence", R_NESTED_MAIL, "MAIL")
        rest = self._after_keyword(arg, "FROM:")
        if rest is None:
            return self._error("syntax", _syntax("MAIL FROM:<address>"), "MAIL")
        address = self._address(rest, eight_bit, allow_null=True, what="sender")
        if isinstance(address, Event):
            return address
        mailbox, _, tail = address
        params = self._params(tail, "MAIL")
        if isinstance(params, Event):
            return params
        size: int | None = None
        body: Literal["7BIT", "8BITMIME"] | None = None
        utf8 = False
        for key, value in params.items():
            if key == "SIZE" and value is not None and value.isdigit() and len(value) <= 20:
                size = int(value)
            elif key == "BODY" and value is not None and value.upper() == "7BIT":
                body = "7BIT"
            elif key == "BODY" and value is not None and value.upper() == "8BITMIME":
                if not self.limits.eightbitmime:
                    return self._error("syntax", R_PARAMS, "MAIL")
                body = "8BITMIME"
            elif key == "SMTPUTF8" and value is None and self.limits.smtputf8:
                utf8 = True
            else:
                return self._error("syntax", R_PARAMS, "MAIL")
        if eight_bit and not utf8:
            return self._error("8bit", R_8BIT, "MAIL")
        if size is not None and size > self.limits.max_message_size:
            return self._error("message_too_big", self._too_big(), "MAIL")
        return MailFrom(address=mailbox, size=size, body=body, smtputf8=utf8)

    def _cmd_rcpt(self, arg: str, eight_bit: bool) -> Event:
        if self.envelope is None:
            reason = R_NEED_HELO if self.helo is None else R_NEED_MAIL
            return self._error("bad_sequence", reason, "RCPT")
        rest = self._after_keyword(arg, "TO:")
        if rest is None:
            return self._error("syntax", _syntax("RCPT TO:<address>"), "RCPT")
        if eight_bit and not self.envelope.smtputf8:
            return self._error("8bit", R_8BIT, "RCPT")
        if len(self.envelope.rcpt_to) >= self.limits.max_recipients:
            return self._error("too_many_recipients", R_TOO_MANY_RCPTS, "RCPT")
        if rest[:12].lower() == "<postmaster>":
            address: tuple[str, str, str] | Event = ("Postmaster", "", rest[12:])
        else:
            utf8 = self.envelope.smtputf8
            address = self._address(rest, utf8, allow_null=False, what="recipient")
        if isinstance(address, Event):
            return address
        mailbox, domain, tail = address
        params = self._params(tail, "RCPT")
        if isinstance(params, Event):
            return params
        if params:  # no RCPT extension (DSN and the like) is offered
            return self._error("syntax", R_PARAMS, "RCPT")
        return RcptTo(address=mailbox, domain=domain)

    def _cmd_data(self, arg: str, eight_bit: bool) -> Event:
        if arg:
            return self._error("syntax", _syntax("DATA"), "DATA")
        if self.envelope is None:
            reason = R_NEED_HELO if self.helo is None else R_NEED_MAIL
            return self._error("bad_sequence", reason, "DATA")
        if not self.envelope.rcpt_to:
            return self._error("bad_sequence", R_NEED_RCPT, "DATA")
        return DataStart()

    def _cmd_rset(self, arg: str, eight_bit: bool) -> Event:
        return Rset() if not arg else self._error("syntax", _syntax("RSET"), "RSET")

    def _cmd_noop(self, arg: str, eight_bit: bool) -> Event:
        return Noop()  # RFC 5321 §4.1.1.9: a parameter string may be given and is ignored

    def _cmd_quit(self, arg: str, eight_bit: bool) -> Event:
        return Quit() if not arg else self._error("syntax", _syntax("QUIT"), "QUIT")

    def _cmd_vrfy(self, arg: str, eight_bit: bool) -> Event:
        return Vrfy(arg) if arg.strip() else self._error("syntax", _syntax("VRFY address"), "VRFY")

    def _cmd_expn(self, arg: str, eight_bit: bool) -> Event:
        return Expn(arg) if arg.strip() else self._error("syntax", _syntax("EXPN list"), "EXPN")

    def _cmd_help(self, arg: str, eight_bit: bool) -> Event:
        return Help(arg)

    def _cmd_starttls(self, arg: str, eight_bit: bool) -> Event:
        if arg:
            return self._error("syntax", _syntax("STARTTLS"), "STARTTLS")
        if self.tls_active:
            return self._error("bad_sequence", R_TLS_ACTIVE, "STARTTLS")
        if not self.tls_available or not self.esmtp:
            return self._error("not_implemented", R_TLS_UNAVAILABLE, "STARTTLS")
        # RFC 3207 §4.2 / CVE-2011-0411: nothing sent after STARTTLS counts
        self.discarded_after_starttls += len(self._in)
        self._in.clear()
        return StartTls()

    @staticmethod
    def _after_keyword(arg: str, keyword: str) -> str | None:
        """What follows "FROM:"/"TO:"; a space after the colon is tolerated (common, harmless)."""
        if arg[: len(keyword)].upper() != keyword:
            return None
        return arg[len(keyword) :].lstrip(" ")

    def _params(self, tail: str, verb: str) -> dict[str, str | None] | Event:
        """ESMTP parameters after the path (RFC 5321 §4.1.2), upper-cased keywords."""
        if tail and not tail.startswith(" "):
            return self._error("syntax", _syntax(f"{verb} <address> [parameters]"), verb)
        params: dict[str, str | None] = {}
        items = tail.split()
        if items and not self.esmtp:
            return self._error("syntax", R_PARAMS, verb)
        for item in items:
            m = _abnf.esmtp_param.fullmatch(item)
            if m is None or m.group(1).upper() in params:
                return self._error("syntax", R_PARAMS, verb)
            params[m.group(1).upper()] = m.group(2)
        return params

    def _address(
        self, rest: str, utf8: bool, *, allow_null: bool, what: str
    ) -> tuple[str, str, str] | Event:
        """Read the path at the start of `rest`: (address, domain with A-Z lower-cased, rest)."""
        verb = "MAIL" if what == "sender" else "RCPT"
        enhanced = "5.1.7" if what == "sender" else "5.1.3"
        if rest.startswith("<>"):
            if allow_null:
                return "", "", rest[2:]
            return self._error("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
        m = (_abnf.path_utf8 if utf8 else _abnf.path).match(rest)
        if m is None:
            return self._error("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
        path, local, domain = m.group(0, "local", "domain")
        limits = self.limits
        octets = len if path.isascii() else _octets  # the limits count octets
        if (
            octets(path) > limits.max_path
            or octets(local) > limits.max_local_part
            or octets(domain) > limits.max_domain
        ):
            too_long = reply(501, enhanced, f"{what.capitalize()} address too long")
            return self._error("syntax", too_long, verb)
        if domain.startswith("[") and not _valid_address_literal(domain):
            return self._error("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
        if not _abnf.printable_address(path):
            bad = reply(553, enhanced, f"Bad {what} address: non-printing character")
            return self._error("nonprinting", bad, verb)
        return f"{local}@{domain}", _abnf.ascii_lower(domain), rest[m.end() :]

    def _line_too_long(self) -> Reply:
        limit = self.limits.max_text_line
        return reply(554, "5.6.0", f"Message rejected: line longer than {limit} octets")

    def _too_big(self) -> Reply:
        limit = self.limits.max_message_size
        return reply(552, "5.3.4", f"Message size exceeds fixed limit of {limit} octets")

    # ------------------------------------------------------------------- DATA
    def _next_data_event(self) -> Event | _Sentinel:
        if self._data_problem is not None:
            return self._discard_data()
        buf = self._in
        last = buf.rfind(b"\n")
        if last < 0:
            if len(buf) >= self._wire_line_limit(self._line_start, buf):
                self._data_problem = ("line_too_long", self._line_too_long())
                return self._discard_data()
            return NEED_DATA
        block = bytes(buf[: last + 1])
        del buf[: last + 1]
        return self._data_block(block)

    def _plain_run(self, block: bytes, start: int) -> tuple[int, bytes | None]:
        """Where the run of lines from `start` to the next line that starts with a dot ends,
        and the run itself if every line in it is plain: CRLF endings only, no NUL, none
        too long. Checked in C (split and memchr are the fastest primitives)."""
        # In a run of CRLF lines a dot line follows a CRLF. memchr first: in most blocks
        # the first dot is the end of data, or there is none (base64).
        dot = block.find(b".", start)
        if dot >= 0 and not (dot >= start + 2 and block[dot - 2 : dot] == b"\r\n"):
            dot = block.find(b"\r\n.", dot)
            dot = dot if dot < 0 else dot + 2
        stop = len(block) if dot < 0 else dot
        run = block if start == 0 and stop == len(block) else block[start:stop]
        lines = run.split(b"\r\n")  # the last is b"": the run ends in LF
        rest = b"".join(lines)
        plain = (
            b"\r" not in rest
            and b"\n" not in rest
            and b"\x00" not in rest
            and max(map(len, lines)) + 2 <= self.limits.max_text_line
        )
        return stop, run if plain else None

    def _wire_line_limit(self, real_start: bool, line: bytes | bytearray) -> int:
        """Longest line on the wire, CRLF included: RFC 5321 §4.5.3.1.6 does not count the
        dot that stuffing added, so a line that starts with one may be one octet longer."""
        return self.limits.max_text_line + (1 if real_start and line[:1] == b"." else 0)

    def _data_block(self, block: bytes) -> Event | _Sentinel:
        """Complete content lines (`block` ends in LF). A run of plain lines up to the next
        line that starts with a dot is checked and copied whole (`_plain_run`); that dot
        line, and every line of a run that is not plain, goes through the loop below."""
        # Problems are found line by line and the first one wins: everything after it is
        # only searched for the end of data, never inspected. `_next_data_event` works the
        # same way when a long line arrives in pieces, so the verdict does not depend on
        # how the client's bytes were cut into reads. A plain run has no problem but size.
        out: list[bytes] = []
        size = 0
        max_size = self.limits.max_message_size
        normalise = self.limits.bare_line_endings == "normalise"
        start = 0
        end = len(block)
        slow_until = 0  # the lines before this offset are looked at one by one
        while start < end:
            if start >= slow_until and block[start] != 0x2E:  # not a line that starts with "."
                stop, run = self._plain_run(block, start)
                if run is not None:
                    out.append(run)
                    size += len(run)
                    start = stop
                    self._line_start = True
                    if self._data_size + size > max_size:
                        self._data_problem = ("message_too_big", self._too_big())
                        self._in[0:0] = block[start:]
                        return self._discard_data()
                    continue
                slow_until = stop
            lf = block.index(b"\n", start)
            crlf = lf > start and block[lf - 1] == 0x0D
            line = block[start : lf - 1 if crlf else lf]
            real_start = self._line_start
            if len(line) + 2 > self._wire_line_limit(real_start, line):
                self._data_problem = ("line_too_long", self._line_too_long())
                self._in[0:0] = block[start:]  # discard from the start of the long line
                return self._discard_data()
            self._line_start = crlf
            start = lf + 1
            if real_start and crlf and line == b".":
                self._in[0:0] = block[start:]  # what follows is the next command(s)
                return self._end_of_data(out, size)
            if b"\x00" in line:
                self._data_problem = ("nul", R_DATA_NUL)
            if not crlf or b"\r" in line:
                if not normalise:
                    self._in.clear()
                    self._abort_data("bare_eol", R_DATA_BARE_EOL)
                    return self._events.pop(0)
                pieces = line.split(b"\r")
            else:
                pieces = [line]
            if real_start and pieces[0].startswith(b"."):
                pieces[0] = pieces[0][1:]
            if self._data_problem is not None:
                self._in[0:0] = block[start:]
                return self._discard_data()
            for piece in pieces:
                out.append(piece + b"\r\n")
                size += len(piece) + 2
            if self._data_size + size > max_size:
                self._data_problem = ("message_too_big", self._too_big())
                self._in[0:0] = block[start:]
                return self._discard_data()
        return self._emit(b"".join(out), size)

    def _emit(self, content: bytes, size: int) -> Event | _Sentinel:
        self._data_size += size
        if self._data_size > self.limits.max_message_size:
            self._data_problem = ("message_too_big", self._too_big())
            return self._discard_data()
        if not content:
            return NEED_DATA
        return DataChunk(content)

    def _end_of_data(self, out: list[bytes], size: int) -> Event:
        self._data_size += size
        if self._data_size > self.limits.max_message_size:
            self._abort_data("message_too_big", self._too_big(), close=False)
            return self._events.pop(0)
        self.phase = _IN_COMMAND
        end = self._await(".", MessageEnd(self._data_size))
        if out:
            self._events.append(end)
            return DataChunk(b"".join(out))
        return end

    def _discard_data(self) -> Event | _Sentinel:
        """After a problem: drop content, look only for the real CRLF.CRLF, then reply."""
        buf = self._in
        if self._line_start:  # the last line ended in CRLF: a "." line right here ends it
            buf[0:0] = b"\r\n"
            self._line_start = False
        i = buf.find(b"\r\n.\r\n")
        if i < 0:
            del buf[: max(0, len(buf) - 4)]  # keep what could be the start of CRLF.CRLF
            return NEED_DATA
        del buf[: i + 5]
        assert self._data_problem is not None
        reason, answer = self._data_problem
        self._abort_data(reason, answer, close=False)
        return self._events.pop(0)

    def _abort_data(self, reason: str, answer: Reply, *, close: bool = True) -> None:
        self._events.append(MessageAborted(reason))
        self._reject(reason, answer, close=close)
        self.phase = _IN_COMMAND
        self.envelope = None
        self._reset_data()

    # ---------------------------------------------------------- transitions
    def _apply(self, ev: Command) -> None:
        if isinstance(ev, MailFrom):
            self.envelope = Envelope(
                mail_from=ev.address, body=ev.body, smtputf8=ev.smtputf8, declared_size=ev.size
            )
        elif isinstance(ev, RcptTo):
            assert self.envelope is not None
            self.envelope.rcpt_to.append(ev.address)
        elif isinstance(ev, Helo):
            self.helo = ev.name
            self.esmtp = ev.extended
            self.envelope = None
        else:
            kind = type(ev)
            if kind is DataStart:
                self._reset_data()
                self.phase = _IN_DATA
            elif kind is Rset:
                self.envelope = None
            elif kind is StartTls:
                self._in.clear()
                self.phase = _IN_TLS

    def _reset_data(self) -> None:
        self._data_problem = None
        self._data_size = 0
        self._line_start = True

    def _standard_reply(self, ev: Command) -> Reply:
        if isinstance(ev, Helo):
            if not ev.extended:
                return _host_reply(250, self.hostname)
            return _host_reply(250, self.hostname, *self.extensions())
        return _STANDARD.get(type(ev), R_OK)

    def extensions(self) -> list[str]:
        """The EHLO keywords this session offers."""
        ext = []
        if self.limits.pipelining:
            ext.append("PIPELINING")
        ext.append(f"SIZE {self.limits.max_message_size}")
        if self.tls_available and not self.tls_active:
            ext.append("STARTTLS")
        ext.append("ENHANCEDSTATUSCODES")
        if self.limits.eightbitmime:
            ext.append("8BITMIME")
        if self.limits.smtputf8:
            ext.append("SMTPUTF8")
        return ext


def _octets(text: str) -> int:
    return len(text.encode())


def _valid_address_literal(literal: str) -> bool:
    inner = literal[1:-1]
    try:
        if inner[:5].upper() == "IPV6:":
            ipaddress.IPv6Address(inner[5:])
        else:
            ipaddress.IPv4Address(inner)
    except ValueError:
        return False
    return True


def _is_printable_token(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text


_HANDLERS = {
    "EHLO": ServerConnection._cmd_ehlo,
    "HELO": ServerConnection._cmd_helo,
    "MAIL": ServerConnection._cmd_mail,
    "RCPT": ServerConnection._cmd_rcpt,
    "DATA": ServerConnection._cmd_data,
    "RSET": ServerConnection._cmd_rset,
    "NOOP": ServerConnection._cmd_noop,
    "QUIT": ServerConnection._cmd_quit,
    "VRFY": ServerConnection._cmd_vrfy,
    "EXPN": ServerConnection._cmd_expn,
    "HELP": ServerConnection._cmd_help,
    "STARTTLS": ServerConnection._cmd_starttls,
}
