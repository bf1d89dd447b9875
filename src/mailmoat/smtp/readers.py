"""Command readers: functions over the client's bytes and the text a command line decodes to.

No connection in sight (the way h11 keeps HTTP's in `_readers.py`): each reader takes what it
reads and the few facts of the session it depends on, and returns the command, or the
`Rejected` event that refuses it. The connection decides what follows (the state's sequence
rules, counting errors, closing). Lengths count octets, as RFC 5321 does.
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from mailmoat.smtp import _abnf
from mailmoat.smtp.events import (
    Command,
    DataStart,
    Expn,
    Helo,
    Help,
    MailFrom,
    Noop,
    Quit,
    RcptTo,
    Rejected,
    Rset,
    StartTls,
    Vrfy,
)
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.replies import reply
from mailmoat.smtp.writers import (
    R_8BIT,
    R_BAD_UTF8,
    R_BARE_EOL,
    R_EMPTY,
    R_NON_SMTP,
    R_NUL,
    R_PARAMS,
    R_SYNTAX_LINE,
    R_TOO_MANY_RCPTS,
    syntax,
    too_big,
)

NOT_IMPLEMENTED = frozenset(
    {"AUTH", "BDAT", "ETRN", "TURN", "ATRN", "SEND", "SOML", "SAML", "VERB", "XCLIENT", "XFORWARD"}
)
"""Known SMTP verbs the engine does not offer: 502, not "unrecognized"."""

EIGHT_BIT_VERBS = frozenset({"MAIL", "RCPT"})
"""The only commands that may carry non-ASCII (UTF-8 addresses, RFC 6531)."""


class CommandLineReader:
    """Cuts command lines out of the input, at most `limit` octets each (CRLF included).

    What follows the limit in an over-long line is dropped as it comes, up to the line's end,
    however many reads that takes: the input never holds more than `limit` octets of it.
    """

    __slots__ = ("limit", "skipping")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.skipping = False  # dropping the rest of an over-long line

    def __call__(self, buf: bytearray) -> bytes | Rejected | None:
        """Take the next complete line (ending in LF) out of `buf`; or a refusal (a line too
        long, a TLS handshake where a command should be); None: no complete line yet."""
        limit = self.limit
        while True:
            if not buf:
                return None
            if self.skipping:
                lf = buf.find(b"\n")
                if lf < 0:
                    buf.clear()
                    return None
                del buf[: lf + 1]
                self.skipping = False
                continue
            if buf.startswith(_abnf.TLS_RECORD_PREFIXES):
                buf.clear()
                return Rejected("non_smtp", R_NON_SMTP, "TLS handshake")
            lf = buf.find(b"\n", 0, limit)
            if lf < 0:
                if len(buf) < limit:
                    return None
                lf = buf.find(b"\n")
                if lf < 0:
                    buf.clear()
                    self.skipping = True
                else:
                    del buf[: lf + 1]
                return Rejected("line_too_long", R_SYNTAX_LINE)
            raw = bytes(buf[: lf + 1])
            del buf[: lf + 1]
            return raw


def read_command(raw: bytes, *, helo_done: bool) -> tuple[str, str, bool] | Rejected:
    """(verb upper-cased, argument, whether the line is 8-bit) of a line that ends in LF.
    The line must end in CRLF, with no other CR and no NUL, be ASCII or UTF-8, and not be
    another protocol's: HTTP and friends anywhere; before HELO (`helo_done` false) also
    header lines and binary junk."""
    line = raw[:-2]
    if not raw.endswith(b"\r\n") or b"\r" in line:
        return Rejected("bare_eol", R_BARE_EOL)
    if b"\x00" in line:
        return Rejected("nul", R_NUL)
    eight_bit = not line.isascii()
    try:
        text = line.decode("utf-8" if eight_bit else "ascii")
    except UnicodeDecodeError:
        return Rejected("bad_utf8", R_BAD_UTF8)
    verb, _, arg = text.partition(" ")
    if not verb:
        return Rejected("syntax", R_EMPTY)
    verb = verb.upper()
    if verb in _abnf.non_smtp_verbs or (not helo_done and not verb.isalpha()):
        return Rejected("non_smtp", R_NON_SMTP, verb[:16])
    return verb, arg, eight_bit


def read_helo(arg: str, *, extended: bool, limits: Limits) -> Helo | Rejected:
    """One printable token; whether it is a sensible name is policy, not grammar."""
    verb = "EHLO" if extended else "HELO"
    name = arg.strip(" ")
    if not name or len(name) > limits.max_domain or not _printable_token(name):
        return Rejected("syntax", syntax(f"{verb} hostname"), verb)
    return Helo(name=name, extended=extended)


def read_mail(arg: str, eight_bit: bool, *, esmtp: bool, limits: Limits) -> MailFrom | Rejected:
    """The argument of MAIL: FROM:<path> and the parameters this engine offers."""
    rest = after_keyword(arg, "FROM:")
    if rest is None:
        return Rejected("syntax", syntax("MAIL FROM:<address>"), "MAIL")
    address = read_path(rest, eight_bit, allow_null=True, what="sender", limits=limits)
    if isinstance(address, Rejected):
        return address
    mailbox, _, tail = address
    params = read_params(tail, "MAIL", esmtp=esmtp)
    if isinstance(params, Rejected):
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
            if not limits.eightbitmime:
                return Rejected("syntax", R_PARAMS, "MAIL", mailbox)
            body = "8BITMIME"
        elif key == "SMTPUTF8" and value is None and limits.smtputf8:
            utf8 = True
        else:
            return Rejected("syntax", R_PARAMS, "MAIL", mailbox)
    if eight_bit and not utf8:
        return Rejected("8bit", R_8BIT, "MAIL", mailbox)
    if size is not None and size > limits.max_message_size:
        return Rejected("message_too_big", too_big(limits), "MAIL", mailbox)
    return MailFrom(address=mailbox, size=size, body=body, smtputf8=utf8)


def read_rcpt(
    arg: str, eight_bit: bool, *, esmtp: bool, smtputf8: bool, recipients: int, limits: Limits
) -> RcptTo | Rejected:
    """The argument of RCPT: TO:<path> (or <Postmaster>), no parameters. `smtputf8`: the
    transaction's MAIL had SMTPUTF8; `recipients`: how many it has accepted so far."""
    rest = after_keyword(arg, "TO:")
    if rest is None:
        return Rejected("syntax", syntax("RCPT TO:<address>"), "RCPT")
    if eight_bit and not smtputf8:
        return Rejected("8bit", R_8BIT, "RCPT")
    if recipients >= limits.max_recipients:
        return Rejected("too_many_recipients", R_TOO_MANY_RCPTS, "RCPT")
    if rest[:12].lower() == "<postmaster>":
        address: tuple[str, str, str] | Rejected = ("Postmaster", "", rest[12:])
    else:
        address = read_path(rest, smtputf8, allow_null=False, what="recipient", limits=limits)
    if isinstance(address, Rejected):
        return address
    mailbox, domain, tail = address
    params = read_params(tail, "RCPT", esmtp=esmtp)
    if isinstance(params, Rejected):
        return params
    if params:  # no RCPT extension (DSN and the like) is offered
        return Rejected("syntax", R_PARAMS, "RCPT", mailbox)
    return RcptTo(address=mailbox, domain=domain)


def read_bare(verb: str, arg: str) -> Command | Rejected:
    """A command that takes no argument: DATA, RSET, QUIT, STARTTLS."""
    if arg:
        return Rejected("syntax", syntax(verb), verb)
    return _BARE[verb]()


_BARE: dict[str, type[Command]] = {
    "DATA": DataStart,
    "RSET": Rset,
    "QUIT": Quit,
    "STARTTLS": StartTls,
}


def read_noop(arg: str) -> Noop:
    return Noop()  # RFC 5321 §4.1.1.9: a parameter string may be given and is ignored


def read_vrfy(arg: str) -> Vrfy | Rejected:
    return Vrfy(arg) if arg.strip() else Rejected("syntax", syntax("VRFY address"), "VRFY")


def read_expn(arg: str) -> Expn | Rejected:
    return Expn(arg) if arg.strip() else Rejected("syntax", syntax("EXPN list"), "EXPN")


def read_help(arg: str) -> Help:
    return Help(arg)


def after_keyword(arg: str, keyword: str) -> str | None:
    """What follows "FROM:"/"TO:"; a space after the colon is tolerated (common, harmless)."""
    if arg[: len(keyword)].upper() != keyword:
        return None
    return arg[len(keyword) :].lstrip(" ")


def read_params(tail: str, verb: str, *, esmtp: bool) -> dict[str, str | None] | Rejected:
    """ESMTP parameters after the path (RFC 5321 §4.1.2), upper-cased keywords; only in an
    EHLO session, each keyword once."""
    if tail and not tail.startswith(" "):
        return Rejected("syntax", syntax(f"{verb} <address> [parameters]"), verb)
    params: dict[str, str | None] = {}
    items = tail.split()
    if items and not esmtp:
        return Rejected("syntax", R_PARAMS, verb)
    for item in items:
        m = _abnf.esmtp_param.fullmatch(item)
        if m is None or m.group(1).upper() in params:
            return Rejected("syntax", R_PARAMS, verb)
        params[m.group(1).upper()] = m.group(2)
    return params


def read_path(
    rest: str, utf8: bool, *, allow_null: bool, what: str, limits: Limits
) -> tuple[str, str, str] | Rejected:
    """The path at the start of `rest`: (address, domain with A-Z lower-cased, what follows).
    `what` is "sender" or "recipient"; `utf8`: RFC 6531 addresses are allowed."""
    verb = "MAIL" if what == "sender" else "RCPT"
    enhanced = "5.1.7" if what == "sender" else "5.1.3"
    if rest.startswith("<>"):
        if allow_null:
            return "", "", rest[2:]
        return Rejected("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
    m = (_abnf.path_utf8 if utf8 else _abnf.path).match(rest)
    if m is None:
        return Rejected("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
    path, local, domain = m.group(0, "local", "domain")
    octets = len if path.isascii() else _octets  # the limits count octets
    if (
        octets(path) > limits.max_path
        or octets(local) > limits.max_local_part
        or octets(domain) > limits.max_domain
    ):
        too_long = reply(501, enhanced, f"{what.capitalize()} address too long")
        return Rejected("syntax", too_long, verb)
    if domain.startswith("[") and not _valid_address_literal(domain):
        return Rejected("syntax", reply(501, enhanced, f"Bad {what} address syntax"), verb)
    if not _abnf.printable_address(path):
        bad = reply(553, enhanced, f"Bad {what} address: non-printing character")
        return Rejected("nonprinting", bad, verb)
    return f"{local}@{domain}", _abnf.ascii_lower(domain), rest[m.end() :]


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


def _printable_token(text: str) -> bool:
    return text.isascii() and text.isprintable() and " " not in text
