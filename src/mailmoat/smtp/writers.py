"""The engine's replies: the fixed ones, and those made of the host name and the limits.

Policy replies are the application's; these are what the engine says by itself, and the
standard positive replies `ServerConnection.accept()` sends. A `Reply` serialises itself
(`replies.py`) once; the replies here are made once too, or cached.
"""

from __future__ import annotations

import functools

from mailmoat.smtp.events import (
    Command,
    DataStart,
    Expn,
    Help,
    MailFrom,
    Quit,
    RcptTo,
    StartTls,
    Vrfy,
)
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.replies import Reply, reply

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


STANDARD: dict[type[Command], Reply] = {
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


def syntax(usage: str) -> Reply:
    """501 with the command's usage."""
    return reply(501, "5.5.4", f"Syntax: {usage}")


def line_too_long(limits: Limits) -> Reply:
    limit = limits.max_text_line
    return reply(554, "5.6.0", f"Message rejected: line longer than {limit} octets")


def too_big(limits: Limits) -> Reply:
    limit = limits.max_message_size
    return reply(552, "5.3.4", f"Message size exceeds fixed limit of {limit} octets")


@functools.lru_cache(maxsize=64)
def greeting_bytes(hostname: str, text: str = "ESMTP") -> bytes:
    """The 220 greeting as `ServerConnection.greeting` writes it."""
    return host_reply(220, f"{hostname} {text}").to_bytes()


def host_reply(code: int, *lines: str) -> Reply:
    """Greeting and HELO/EHLO replies: made of the host name (and the EHLO keywords), with
    no enhanced status code."""
    return reply(code, None, *lines)


def ehlo_keywords(limits: Limits, *, starttls: bool) -> list[str]:
    """The EHLO keywords a session offers; `starttls`: TLS is available and not active yet."""
    ext = []
    if limits.pipelining:
        ext.append("PIPELINING")
    ext.append(f"SIZE {limits.max_message_size}")
    if starttls:
        ext.append("STARTTLS")
    ext.append("ENHANCEDSTATUSCODES")
    if limits.eightbitmime:
        ext.append("8BITMIME")
    if limits.smtputf8:
        ext.append("SMTPUTF8")
    return ext
