"""The session's state machine: every state and every transition, in the tables of this file.

Everything that moves the session from one state to another lives here (the way h11 keeps
HTTP's in `_state.py`): the readers only read, the writers only write, and the connection
(`connection.py`) asks this module where a command may come and where it leads.

A command moves the state only when the application accepts it (a positive reply), except
the end of data, which ends the transaction whatever the reply. Commands that do not appear
in `TRANSITIONS` for a state (NOOP, VRFY, EXPN, HELP, QUIT, a refused one) leave it as it is;
QUIT and a 421 close the session instead (`ServerConnection.closing`).
"""

from __future__ import annotations

import enum

from mailmoat.smtp.events import DataStart, Helo, MailFrom, MessageEnd, RcptTo, Rset, StartTls
from mailmoat.smtp.replies import Reply
from mailmoat.smtp.writers import R_NEED_HELO, R_NEED_MAIL, R_NEED_RCPT, R_NESTED_MAIL


class State(enum.Enum):
    # Enum's own __hash__ is Python code (hash of the name); the tables below look states up
    # a few dozen times a message, and a member is only ever equal to itself.
    __hash__ = object.__hash__

    GREETING = "greeting"  # connected, greeting not sent yet
    NO_HELO = "no helo"  # greeted (or after TLS started): HELO/EHLO first
    READY = "ready"  # HELO/EHLO accepted, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # between 354 and CRLF.CRLF
    MESSAGE_END = "message end"  # CRLF.CRLF read, its reply pending
    TLS = "tls"  # STARTTLS accepted, waiting for the handshake
    CLOSED = "closed"


class Trigger(enum.Enum):
    """What moves the state besides an accepted command."""

    __hash__ = object.__hash__

    GREETED = "greeted"
    DATA_END = "data end"  # the real CRLF.CRLF of a message that passed the engine's checks
    DATA_ABORTED = "data aborted"  # the engine refused the message (its reply is queued)
    TLS_STARTED = "tls started"
    CLOSED = "closed"  # the session closes (QUIT, 421, an error limit, the client's EOF)


GREETING, NO_HELO, READY, MAIL, RCPT, DATA, MESSAGE_END, TLS, CLOSED = State

COMMAND_STATES = frozenset({NO_HELO, READY, MAIL, RCPT})
"""Where the client's bytes are command lines (their phase is COMMAND, as is MESSAGE_END's,
whose reply is pending)."""
_CLOSE = Trigger.CLOSED

TRANSITIONS: dict[State, dict[type | Trigger, State]] = {
    GREETING: {Trigger.GREETED: NO_HELO},
    NO_HELO: {Helo: READY, Rset: NO_HELO},
    READY: {Helo: READY, Rset: READY, MailFrom: MAIL, StartTls: TLS},
    MAIL: {Helo: READY, Rset: READY, RcptTo: RCPT, StartTls: TLS},
    RCPT: {Helo: READY, Rset: READY, RcptTo: RCPT, DataStart: DATA, StartTls: TLS},
    DATA: {Trigger.DATA_END: MESSAGE_END, Trigger.DATA_ABORTED: READY},
    MESSAGE_END: {MessageEnd: READY},
    TLS: {Trigger.TLS_STARTED: NO_HELO},
    CLOSED: {},
}
"""State -> what happened -> the next state. Every state can also close (Trigger.CLOSED)."""

SEQUENCE: dict[State, dict[str, Reply]] = {
    NO_HELO: {"MAIL": R_NEED_HELO, "RCPT": R_NEED_HELO, "DATA": R_NEED_HELO},
    READY: {"RCPT": R_NEED_MAIL, "DATA": R_NEED_MAIL},
    MAIL: {"MAIL": R_NESTED_MAIL, "DATA": R_NEED_RCPT},
    RCPT: {"MAIL": R_NESTED_MAIL},
}
"""State -> command verb -> the 503 that refuses it there (RFC 5321 §4.1.4). A verb not
listed for a state is in sequence there."""

LAST_IN_GROUP = frozenset({"EHLO", "HELO", "DATA", "VRFY", "EXPN", "NOOP", "QUIT", "HELP"})
"""RFC 2920 §3.1: these may only be the last command in a pipelined group. STARTTLS is
handled apart: what follows it is discarded, as RFC 3207 §4.2 asks, instead of being an error."""

JUNK = frozenset({"NOOP", "RSET", "VRFY", "EXPN", "HELP"})
"""Commands that move no mail (Postfix's "junk commands"); a session may send only so many."""


ENDS_SESSION = frozenset(
    {"pregreet", "non_smtp", "pipelining", "too_many_errors", "too_many_unknown", "too_many_junk"}
)
"""Engine refusals (`Rejected.reason`) that close the session after their reply. In DATA a
bare line ending does too, when it is refused: what follows cannot be trusted to be SMTP."""


class Phase(enum.Enum):
    """What the client's bytes mean right now: the coarse view of `State` the transport
    needs (its timeouts differ in DATA)."""

    GREETING = "greeting"  # connected, greeting not sent yet
    COMMAND = "command"
    DATA = "data"  # between 354 and CRLF.CRLF
    TLS = "tls"  # STARTTLS accepted, waiting for the handshake
    CLOSED = "closed"


PHASE: dict[State, Phase] = {
    GREETING: Phase.GREETING,
    **dict.fromkeys((*COMMAND_STATES, MESSAGE_END), Phase.COMMAND),
    DATA: Phase.DATA,
    TLS: Phase.TLS,
    CLOSED: Phase.CLOSED,
}


class StateError(RuntimeError):
    """The application drove the engine out of turn (a programming error, not the client's)."""


def advance(state: State, trigger: type | Trigger) -> State:
    """The state after `trigger` in `state`: the table's, or the same for a command that does
    not move it. A trigger the table does not allow raises StateError."""
    if trigger is _CLOSE:
        return CLOSED
    new = TRANSITIONS[state].get(trigger)
    if new is not None:
        return new
    if trigger in _MOVES:
        raise StateError(f"{trigger} in state {state.value}")
    return state


_MOVES = frozenset(trigger for row in TRANSITIONS.values() for trigger in row)
"""What moves the state somewhere: allowed only where the table says."""
