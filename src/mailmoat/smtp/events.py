"""Events the engine produces. Small immutable objects, one per thing the client did.

Command events (`Command` subclasses) wait for a reply: the application answers each with
`ServerConnection.accept()` or `ServerConnection.send(reply)`, in order. The other events are
information: the engine has already answered (or nothing needs answering).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mailmoat.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class Command(Event):
    """A well-formed command in a valid state; it needs a reply."""


@dataclass(frozen=True, slots=True)
class Helo(Command):
    name: str
    extended: bool
    """True for EHLO, False for HELO."""


@dataclass(frozen=True, slots=True)
class MailFrom(Command):
    address: str
    """Reverse path without brackets; "" is the null sender."""
    size: int | None = None
    body: Literal["7BIT", "8BITMIME"] | None = None
    smtputf8: bool = False


@dataclass(frozen=True, slots=True)
class RcptTo(Command):
    address: str
    """Forward path without brackets, or "Postmaster"."""
    domain: str
    """Domain part with A-Z lower-cased, nothing else folded ("" for the bare Postmaster)."""


@dataclass(frozen=True, slots=True)
class DataStart(Command):
    pass


@dataclass(frozen=True, slots=True)
class MessageEnd(Command):
    """The client sent CRLF.CRLF and the message passed every engine check."""

    size: int


@dataclass(frozen=True, slots=True)
class Rset(Command):
    pass


@dataclass(frozen=True, slots=True)
class Noop(Command):
    pass


@dataclass(frozen=True, slots=True)
class Quit(Command):
    pass


@dataclass(frozen=True, slots=True)
class Vrfy(Command):
    argument: str


@dataclass(frozen=True, slots=True)
class Expn(Command):
    argument: str


@dataclass(frozen=True, slots=True)
class Help(Command):
    argument: str = ""


@dataclass(frozen=True, slots=True)
class StartTls(Command):
    pass


@dataclass(frozen=True, slots=True)
class DataChunk(Event):
    """Message content: dot-stuffing undone, every line ending in CRLF."""

    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """The engine refused something by itself and has queued `reply`.

    `reason` is a short stable token for logs and counters (for example "syntax",
    "bad_sequence", "unknown_command", "line_too_long", "bare_lf", "pipelining",
    "pregreet", "non_smtp", "too_many_errors", "message_too_big").
    """

    reason: str
    reply: Reply
    command: str = ""
    address: str | None = None
    """The address of a MAIL or RCPT refused after its path was read (for the log)."""


@dataclass(frozen=True, slots=True)
class MessageAborted(Event):
    """The message in progress will not be delivered (the reason's reply is already queued,
    or the client went away); drop whatever was spooled."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The client closed its side of the connection."""
