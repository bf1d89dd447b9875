"""Table-driven tests of the sans-IO SMTP engine (mailmoat.smtp.connection).

Each table row is (input, expected replies after the greeting, expected events, closes).
Replies are written "code" or "code enhanced"; events by class name, with the reason for
`Rejected` and `MessageAborted` ("Rejected:syntax"), consecutive DataChunks as one. A bytes
input is fed one line at a time, draining after each, like a client that waits for every reply;
a list input is fed chunk by chunk exactly as given (that is how pipelined groups are written).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, Phase, ServerConnection
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
    Quit,
    RcptTo,
    Rejected,
    StartTls,
    Vrfy,
)
from mailmoat.smtp.replies import Reply, ReplyParser, reply

# ------------------------------------------------------------------------ helper


@dataclass
class Run:
    conn: ServerConnection
    events: list[Event]
    output: bytes

    @property
    def replies(self) -> list[Reply]:
        return ReplyParser().feed(self.output)

    @property
    def codes(self) -> list[str]:
        """Replies after the greeting, as "code" or "code enhanced"."""
        return [f"{r.code} {r.enhanced}" if r.enhanced else str(r.code) for r in self.replies[1:]]

    @property
    def types(self) -> list[str]:
        """Event class names; consecutive DataChunks count as one."""
        out: list[str] = []
        for ev in self.events:
            name = type(ev).__name__
            if name == "DataChunk" and out and out[-1] == name:
                continue
            if isinstance(ev, Rejected | MessageAborted):
                name += f":{ev.reason}"
            out.append(name)
        return out

    def of(self, cls: type) -> list[Any]:
        return [ev for ev in self.events if isinstance(ev, cls)]

    @property
    def content(self) -> bytes:
        return b"".join(ev.data for ev in self.of(DataChunk))

    @property
    def closed(self) -> bool:
        return self.conn.closing or self.conn.phase is Phase.CLOSED


Answer = Callable[[ServerConnection, Command], None]


def lockstep(data: bytes) -> list[bytes]:
    """Cut after every CRLF: a client that sends one line and waits for the reply."""
    return re.findall(rb".*?\r\n|.+$", data, re.S)


def drain(conn: ServerConnection, events: list[Event], answer: Answer | None) -> object:
    while True:
        ev = conn.next_event()
        if ev in (NEED_DATA, PAUSED, CLOSED):
            return ev
        assert isinstance(ev, Event)
        events.append(ev)
        if isinstance(ev, Command):
            if answer is None:
                conn.accept()
            else:
                answer(conn, ev)
            if isinstance(ev, StartTls) and conn.phase is Phase.TLS:
                conn.tls_started()  # the handshake succeeds at once


def session(
    data: bytes | Sequence[bytes],
    *,
    tls_available: bool = False,
    tls_active: bool = False,
    answer: Answer | None = None,
    pregreet: bytes = b"",
    eof: bool = False,
    **limits: Any,
) -> Run:
    """Run a whole session: greeting, feed each chunk and drain, answer every command
    (accept() unless `answer` says otherwise), collect the events and the output."""
    conn = ServerConnection(
        engine_limits(SmtpSettings(**limits)),
        "mx.test",
        tls_available=tls_available,
        tls_active=tls_active,
    )
    events: list[Event] = []
    if pregreet:
        conn.receive_data(pregreet)
    conn.greeting()
    state = drain(conn, events, answer)
    chunks = lockstep(data) if isinstance(data, bytes) else list(data)
    for chunk in [*chunks, b""] if eof else chunks:
        if state is CLOSED:
            break
        conn.receive_data(chunk)
        state = drain(conn, events, answer)
    return Run(conn, events, conn.data_to_send())


# -------------------------------------------------------------------- constants
EHLO = b"EHLO client.example\r\n"
HELO = b"HELO client.example\r\n"
MAIL = b"MAIL FROM:<alice@example.org>\r\n"
RCPT = b"RCPT TO:<bob@example.net>\r\n"
DATA = b"DATA\r\n"
MSG = b"Subject: test\r\n\r\nHello.\r\n.\r\n"
QUIT = b"QUIT\r\n"
NOOP = b"NOOP\r\n"
TX = MAIL + RCPT + DATA + MSG

OK_MAIL, OK_RCPT, GO, OK, BYE = "250 2.1.0", "250 2.1.5", "354", "250 2.0.0", "221 2.0.0"
TX_R = [OK_MAIL, OK_RCPT, GO, OK]
TX_E = ["MailFrom", "RcptTo", "DataStart", "DataChunk", "MessageEnd"]
SYNTAX = "501 5.5.4"
BAD_FROM, BAD_TO = "501 5.1.7", "501 5.1.3"
SEQ = "503 5.5.1"
UNKNOWN = "500 5.5.1"
NOT_IMPL = "502 5.5.1"
BAD_CHARS = "500 5.5.2"
PARAMS = "555 5.5.4"
SYNC = "554 5.5.0"
NON_SMTP = "554 5.7.0"
DATA_BAD = "554 5.6.0"
TOO_BIG = "552 5.3.4"
CLOSING = "421 4.7.0"


def case(
    name: str,
    data: bytes | list[bytes],
    replies: list[str],
    events: list[str],
    closes: bool = False,
    **options: Any,
) -> Any:
    return pytest.param(data, replies, events, closes, options, id=name)


def check(data, replies, events, closes, options) -> Run:
    run = session(data, **options)
    assert run.codes == replies
    assert run.types == events
    assert run.closed == closes
    return run


def cmd_line(total: int, verb: bytes = b"NOOP ") -> bytes:
    """A command line of exactly `total` octets, CRLF included."""
    return verb + b"x" * (total - len(verb) - 2) + b"\r\n"


def domain_of(n: int) -> str:
    """A syntactically valid domain of exactly `n` octets (labels of at most 62)."""
    s = (("d" * 62 + ".") * 5)[:n]
    return s[:-1] + "d" if s.endswith(".") else s


def path_of(total: int, local: str = "l" * 10) -> bytes:
    """<local@domain> of exactly `total` octets, brackets included."""
    return f"<{local}@{domain_of(total - len(local) - 3)}>".encode()


def text_line(total: int, prefix: bytes = b"") -> bytes:
    """A message line of exactly `total` octets on the wire, CRLF included."""
    return prefix + b"y" * (total - len(prefix) - 2) + b"\r\n"


def body_of(size: int) -> bytes:
    """Message content of exactly `size` octets (lines of 100), then the end of data."""
    lines = [b"z" * 98 + b"\r\n"] * (size // 100)
    rest = size % 100
    if rest:
        lines.append(b"w" * max(0, rest - 2) + b"\r\n" if rest >= 2 else b"")
    body = b"".join(lines)
    assert len(body) == size or rest == 1
    return body


U_FROM = "MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8\r\n".encode()
U_RCPT = "RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.example>\r\n".encode()

# ------------------------------------------------------------------- the tables
GOOD = [
    case("ehlo", EHLO, ["250"], ["Helo"]),
    case("helo", HELO, ["250"], ["Helo"]),
    case("ehlo lower-case verb", b"ehlo client.example\r\n", ["250"], ["Helo"]),
    case("ehlo address literal", b"EHLO [192.0.2.1]\r\n", ["250"], ["Helo"]),
    case("ehlo trailing space", b"EHLO client.example \r\n", ["250"], ["Helo"]),
    case("transaction", EHLO + TX + QUIT, ["250", *TX_R, BYE], ["Helo", *TX_E, "Quit"], True),
    case("transaction after HELO", HELO + TX, ["250", *TX_R], ["Helo", *TX_E]),
    case("two transactions", EHLO + TX + TX, ["250", *TX_R, *TX_R], ["Helo", *TX_E, *TX_E]),
    case(
        "empty message",
        EHLO + MAIL + RCPT + DATA + b".\r\n",
        ["250", *TX_R],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "MessageEnd"],
    ),
    case(
        "mail lower case",
        EHLO + b"mail from:<a@example.org>\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "mail space after colon",
        EHLO + b"MAIL FROM: <a@example.org>\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case("null sender", EHLO + b"MAIL FROM:<>\r\n", ["250", OK_MAIL], ["Helo", "MailFrom"]),
    case(
        "null sender with SIZE",
        EHLO + b"MAIL FROM:<> SIZE=10\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "SIZE",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1000\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "BODY=8BITMIME",
        EHLO + b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "BODY=7BIT",
        EHLO + b"MAIL FROM:<a@example.org> BODY=7BIT\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "SMTPUTF8",
        EHLO + b"MAIL FROM:<a@example.org> SMTPUTF8\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "all params, lower case",
        EHLO + b"MAIL FROM:<a@example.org> size=5  body=8bitmime smtputf8\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "source route",
        EHLO + b"MAIL FROM:<@relay.example,@[192.0.2.7]:a@example.org>\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "quoted local part",
        EHLO
        + b'MAIL FROM:<"john doe"@example.org>\r\n'
        + b'RCPT TO:<"a\\"b\\\\c"@example.net>\r\n',
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "atext local part",
        EHLO + b"MAIL FROM:<a.b+c!#$%&'*/=?^_`{|}~-@example.org>\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "IPv4 literal",
        EHLO + b"MAIL FROM:<a@[192.0.2.1]>\r\nRCPT TO:<b@[198.51.100.255]>\r\n",
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "IPv6 literal",
        EHLO + b"MAIL FROM:<a@[IPv6:2001:db8::1]>\r\nRCPT TO:<b@[IPv6:::ffff:192.0.2.1]>\r\n",
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "postmaster",
        EHLO
        + MAIL
        + b"RCPT TO:<Postmaster>\r\nRCPT TO:<postmaster>\r\n"
        + b"RCPT TO:<POSTMASTER>\r\nRCPT TO:<postmaster@example.net>\r\n",
        ["250", OK_MAIL, OK_RCPT, OK_RCPT, OK_RCPT, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo", "RcptTo", "RcptTo", "RcptTo"],
    ),
    case("rset", EHLO + b"RSET\r\n", ["250", OK], ["Helo", "Rset"]),
    case("noop", EHLO + NOOP, ["250", OK], ["Helo", "Noop"]),
    case("noop with argument", EHLO + b"NOOP anything at all\r\n", ["250", OK], ["Helo", "Noop"]),
    case("help", EHLO + b"HELP\r\n", ["250", "214 2.0.0"], ["Helo", "Help"]),
    case("help with topic", EHLO + b"HELP MAIL\r\n", ["250", "214 2.0.0"], ["Helo", "Help"]),
    case("vrfy", EHLO + b"VRFY bob\r\n", ["250", "252 2.5.0"], ["Helo", "Vrfy"]),
    case("expn", EHLO + b"EXPN staff\r\n", ["250", "252 2.5.0"], ["Helo", "Expn"]),
    case("quit", QUIT, [BYE], ["Quit"], True),
    case(
        "quit after mail",
        EHLO + MAIL + QUIT,
        ["250", OK_MAIL, BYE],
        ["Helo", "MailFrom", "Quit"],
        True,
    ),
    case(
        "quit after rcpt",
        EHLO + MAIL + RCPT + QUIT,
        ["250", OK_MAIL, OK_RCPT, BYE],
        ["Helo", "MailFrom", "RcptTo", "Quit"],
        True,
    ),
    case("rset before helo", b"RSET\r\n", [OK], ["Rset"]),
    case("noop before helo", NOOP, [OK], ["Noop"]),
    case("vrfy before helo", b"VRFY bob\r\n", ["252 2.5.0"], ["Vrfy"]),
    case(
        "rset mid transaction",
        EHLO + MAIL + RCPT + b"RSET\r\n" + MAIL,
        ["250", OK_MAIL, OK_RCPT, OK, OK_MAIL],
        ["Helo", "MailFrom", "RcptTo", "Rset", "MailFrom"],
    ),
    case(
        "ehlo again resets",
        EHLO + MAIL + EHLO + MAIL,
        ["250", OK_MAIL, "250", OK_MAIL],
        ["Helo", "MailFrom", "Helo", "MailFrom"],
    ),
    case(
        "dot-stuffing", EHLO + MAIL + RCPT + DATA + b"..a\r\n.\r\n", ["250", *TX_R], ["Helo", *TX_E]
    ),
    case(
        "end of data then pipelined quit",
        [EHLO, MAIL + RCPT + DATA, b"x\r\n.\r\nQUIT\r\n"],
        ["250", *TX_R, BYE],
        ["Helo", *TX_E, "Quit"],
        True,
    ),
    case(
        "end of data then quit, HELO",
        [HELO, MAIL, RCPT, DATA, b"x\r\n.\r\nQUIT\r\n"],
        ["250", *TX_R, BYE],
        ["Helo", *TX_E, "Quit"],
        True,
    ),
    case("eof", EHLO, ["250"], ["Helo", "ConnectionClosed"], True, eof=True),
    case(
        "eof in data",
        EHLO + MAIL + RCPT + DATA + b"partial\r\n",
        ["250", OK_MAIL, OK_RCPT, GO],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "DataChunk",
            "MessageAborted:client disconnected",
            "ConnectionClosed",
        ],
        True,
        eof=True,
    ),
]

BAD_SYNTAX = [
    case("ehlo without name", b"EHLO\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("ehlo blank name", b"EHLO   \r\n", [SYNTAX], ["Rejected:syntax"]),
    case("ehlo two words", b"EHLO a b\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("ehlo control char", b"EHLO a\x01b\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("helo without name", b"HELO\r\n", [SYNTAX], ["Rejected:syntax"]),
    case(
        "mail without from",
        EHLO + b"MAIL <a@example.org>\r\n",
        ["250", SYNTAX],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail to:",
        EHLO + b"MAIL TO:<a@example.org>\r\n",
        ["250", SYNTAX],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail no brackets",
        EHLO + b"MAIL FROM:a@example.org\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail unclosed",
        EHLO + b"MAIL FROM:<a@example.org\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail no local part",
        EHLO + b"MAIL FROM:<@example.org>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail no domain",
        EHLO + b"MAIL FROM:<a@>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail no at",
        EHLO + b"MAIL FROM:<alice>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail double dot",
        EHLO + b"MAIL FROM:<a..b@example.org>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail leading hyphen",
        EHLO + b"MAIL FROM:<a@-example.org>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail space in local",
        EHLO + b"MAIL FROM:<a b@example.org>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail unbalanced quote",
        EHLO + b'MAIL FROM:<"a@example.org>\r\n',
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail param glued",
        EHLO + b"MAIL FROM:<a@example.org>SIZE=1\r\n",
        ["250", SYNTAX],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "rcpt null",
        EHLO + MAIL + b"RCPT TO:<>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt no brackets",
        EHLO + MAIL + b"RCPT TO:bob@example.net\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt without to",
        EHLO + MAIL + b"RCPT <bob@example.net>\r\n",
        ["250", OK_MAIL, SYNTAX],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt bad IPv4 literal",
        EHLO + MAIL + b"RCPT TO:<b@[192.0.2.256]>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt short IPv4 literal",
        EHLO + MAIL + b"RCPT TO:<b@[192.0.2]>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt untagged IPv6 literal",
        EHLO + MAIL + b"RCPT TO:<b@[2001:db8::1]>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt bad IPv6 literal",
        EHLO + MAIL + b"RCPT TO:<b@[IPv6:2001:db8::g]>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt IPv6 literal too many groups",
        EHLO + MAIL + b"RCPT TO:<b@[IPv6:1:2:3:4:5:6:7:8:9]>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "mail bad literal",
        EHLO + b"MAIL FROM:<a@[300.1.1.1]>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "mail empty literal",
        EHLO + b"MAIL FROM:<a@[]>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "data with argument",
        EHLO + MAIL + RCPT + b"DATA now\r\n",
        ["250", OK_MAIL, OK_RCPT, SYNTAX],
        ["Helo", "MailFrom", "RcptTo", "Rejected:syntax"],
    ),
    case("rset with argument", b"RSET x\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("quit with argument", b"QUIT now\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("vrfy without argument", b"VRFY\r\n", [SYNTAX], ["Rejected:syntax"]),
    case("expn without argument", b"EXPN \r\n", [SYNTAX], ["Rejected:syntax"]),
    case(
        "starttls with argument",
        EHLO + b"STARTTLS now\r\n",
        ["250", SYNTAX],
        ["Helo", "Rejected:syntax"],
        tls_available=True,
    ),
    case(
        "unknown verb",
        EHLO + b"FOO bar\r\n",
        ["250", UNKNOWN],
        ["Helo", "Rejected:unknown_command"],
    ),
    case("empty line", EHLO + b"\r\n", ["250", "500 5.5.2"], ["Helo", "Rejected:syntax"]),
    case(
        "empty line before HELO", b"\r\n" + EHLO, ["500 5.5.2", "250"], ["Rejected:syntax", "Helo"]
    ),
    case(
        "bdat",
        EHLO + MAIL + RCPT + b"BDAT 10 LAST\r\n",
        ["250", OK_MAIL, OK_RCPT, NOT_IMPL],
        ["Helo", "MailFrom", "RcptTo", "Rejected:not_implemented"],
    ),
    case(
        "auth",
        EHLO + b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        ["250", NOT_IMPL],
        ["Helo", "Rejected:not_implemented"],
    ),
    case(
        "etrn",
        EHLO + b"ETRN example.org\r\n",
        ["250", NOT_IMPL],
        ["Helo", "Rejected:not_implemented"],
    ),
    case(
        "xclient",
        EHLO + b"XCLIENT ADDR=1.2.3.4\r\n",
        ["250", NOT_IMPL],
        ["Helo", "Rejected:not_implemented"],
    ),
    case(
        "bare LF",
        EHLO + b"NOOP\nNOOP\r\n",
        ["250", BAD_CHARS, OK],
        ["Helo", "Rejected:bare_eol", "Noop"],
    ),
    case("bare CR", EHLO + b"NO\rOP\r\n", ["250", BAD_CHARS], ["Helo", "Rejected:bare_eol"]),
    case("CR CR LF", EHLO + b"NOOP\r\r\n", ["250", BAD_CHARS], ["Helo", "Rejected:bare_eol"]),
    case("NUL", EHLO + b"NOOP\x00\r\n", ["250", BAD_CHARS], ["Helo", "Rejected:nul"]),
    case(
        "NUL in mail",
        EHLO + b"MAIL FROM:<a\x00@example.org>\r\n",
        ["250", BAD_CHARS],
        ["Helo", "Rejected:nul"],
    ),
]

PARAMS_TABLE = [
    case(
        "params after HELO",
        HELO + b"MAIL FROM:<a@example.org> SIZE=10\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SMTPUTF8 after HELO",
        HELO + b"MAIL FROM:<a@example.org> SMTPUTF8\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "unknown param",
        EHLO + b"MAIL FROM:<a@example.org> FOO=bar\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "RET (DSN not offered)",
        EHLO + b"MAIL FROM:<a@example.org> RET=HDRS\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "AUTH param",
        EHLO + b"MAIL FROM:<a@example.org> AUTH=<>\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SIZE without value",
        EHLO + b"MAIL FROM:<a@example.org> SIZE\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SIZE not a number",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1k\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SIZE negative",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=-1\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SIZE huge",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=" + b"9" * 30 + b"\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SIZE twice",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1 SIZE=2\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "BODY=BINARYMIME",
        EHLO + b"MAIL FROM:<a@example.org> BODY=BINARYMIME\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "BODY without value",
        EHLO + b"MAIL FROM:<a@example.org> BODY\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SMTPUTF8 with value",
        EHLO + b"MAIL FROM:<a@example.org> SMTPUTF8=yes\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "SMTPUTF8 not offered",
        EHLO + b"MAIL FROM:<a@example.org> SMTPUTF8\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
        smtputf8=False,
    ),
    case(
        "8BITMIME not offered",
        EHLO + b"MAIL FROM:<a@example.org> BODY=8BITMIME\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
        eightbitmime=False,
    ),
    case(
        "BODY=7BIT without 8BITMIME offered",
        EHLO + b"MAIL FROM:<a@example.org> BODY=7BIT\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
        eightbitmime=False,
    ),
    case(
        "param with empty value",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=\r\n",
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "rcpt param",
        EHLO + MAIL + b"RCPT TO:<b@example.net> NOTIFY=NEVER\r\n",
        ["250", OK_MAIL, PARAMS],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "rcpt ORCPT",
        EHLO + MAIL + b"RCPT TO:<b@example.net> ORCPT=rfc822;b@example.net\r\n",
        ["250", OK_MAIL, PARAMS],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
]

SEQUENCE = [
    case("mail before helo", MAIL, [SEQ], ["Rejected:bad_sequence"]),
    case("rcpt before helo", RCPT, [SEQ], ["Rejected:bad_sequence"]),
    case("data before helo", DATA, [SEQ], ["Rejected:bad_sequence"]),
    case("rcpt before mail", EHLO + RCPT, ["250", SEQ], ["Helo", "Rejected:bad_sequence"]),
    case("data before mail", EHLO + DATA, ["250", SEQ], ["Helo", "Rejected:bad_sequence"]),
    case(
        "data before rcpt",
        EHLO + MAIL + DATA,
        ["250", OK_MAIL, SEQ],
        ["Helo", "MailFrom", "Rejected:bad_sequence"],
    ),
    case(
        "nested mail",
        EHLO + MAIL + MAIL,
        ["250", OK_MAIL, SEQ],
        ["Helo", "MailFrom", "Rejected:bad_sequence"],
    ),
    case(
        "rcpt after rset",
        EHLO + MAIL + b"RSET\r\n" + RCPT,
        ["250", OK_MAIL, OK, SEQ],
        ["Helo", "MailFrom", "Rset", "Rejected:bad_sequence"],
    ),
    case(
        "rcpt after ehlo again",
        EHLO + MAIL + EHLO + RCPT,
        ["250", OK_MAIL, "250", SEQ],
        ["Helo", "MailFrom", "Helo", "Rejected:bad_sequence"],
    ),
    case(
        "rcpt after end of data",
        EHLO + TX + RCPT,
        ["250", *TX_R, SEQ],
        ["Helo", *TX_E, "Rejected:bad_sequence"],
    ),
    case(
        "data after end of data",
        EHLO + TX + DATA,
        ["250", *TX_R, SEQ],
        ["Helo", *TX_E, "Rejected:bad_sequence"],
    ),
    case(
        "data lines without DATA are commands",
        EHLO + MAIL + RCPT + b"Subject: x\r\n",
        ["250", OK_MAIL, OK_RCPT, UNKNOWN],
        ["Helo", "MailFrom", "RcptTo", "Rejected:unknown_command"],
    ),
    case(
        "starttls before ehlo",
        b"STARTTLS\r\n",
        [NOT_IMPL],
        ["Rejected:not_implemented"],
        tls_available=True,
    ),
    case(
        "starttls after helo",
        HELO + b"STARTTLS\r\n",
        ["250", NOT_IMPL],
        ["Helo", "Rejected:not_implemented"],
        tls_available=True,
    ),
]

EIGHT_BIT = [
    case(
        "utf8 sender and recipient",
        EHLO + U_FROM + U_RCPT,
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "utf8 sender without SMTPUTF8",
        EHLO + "MAIL FROM:<j\u00f6rg@example.org>\r\n".encode(),
        ["250", "553 5.6.7"],
        ["Helo", "Rejected:8bit"],
    ),
    case(
        "utf8 domain without SMTPUTF8",
        EHLO + "MAIL FROM:<a@b\u00fccher.example>\r\n".encode(),
        ["250", "553 5.6.7"],
        ["Helo", "Rejected:8bit"],
    ),
    case(
        "utf8 recipient without SMTPUTF8",
        EHLO + MAIL + U_RCPT,
        ["250", OK_MAIL, "553 5.6.7"],
        ["Helo", "MailFrom", "Rejected:8bit"],
    ),
    case(
        "utf8 recipient after the SMTPUTF8 transaction",
        EHLO + U_FROM + b"RSET\r\n" + MAIL + U_RCPT,
        ["250", OK_MAIL, OK, OK_MAIL, "553 5.6.7"],
        ["Helo", "MailFrom", "Rset", "MailFrom", "Rejected:8bit"],
    ),
    case(
        "ascii recipient in SMTPUTF8 transaction",
        EHLO + U_FROM + RCPT,
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "utf8 quoted local part",
        EHLO + 'MAIL FROM:<"j\u00f6 rg"@x.example> SMTPUTF8\r\n'.encode(),
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "invalid utf8",
        EHLO + b"MAIL FROM:<\xff@example.org> SMTPUTF8\r\n",
        ["250", BAD_CHARS],
        ["Helo", "Rejected:bad_utf8"],
    ),
    case(
        "overlong utf8",
        EHLO + b"MAIL FROM:<\xc0\xaf@example.org> SMTPUTF8\r\n",
        ["250", BAD_CHARS],
        ["Helo", "Rejected:bad_utf8"],
    ),
    case(
        "utf8 surrogate",
        EHLO + b"MAIL FROM:<\xed\xa0\x80@example.org> SMTPUTF8\r\n",
        ["250", BAD_CHARS],
        ["Helo", "Rejected:bad_utf8"],
    ),
    case(
        "truncated utf8 in rcpt",
        EHLO + U_FROM + b"RCPT TO:<\xc3@example.net>\r\n",
        ["250", OK_MAIL, BAD_CHARS],
        ["Helo", "MailFrom", "Rejected:bad_utf8"],
    ),
    case("8bit in ehlo", "EHLO h\u00f6st.example\r\n".encode(), [BAD_CHARS], ["Rejected:8bit"]),
    case(
        "8bit in noop",
        EHLO + "NOOP \u00e9\r\n".encode(),
        ["250", BAD_CHARS],
        ["Helo", "Rejected:8bit"],
    ),
    case(
        "8bit in vrfy",
        EHLO + "VRFY j\u00f6rg\r\n".encode(),
        ["250", BAD_CHARS],
        ["Helo", "Rejected:8bit"],
    ),
    case(
        "SMTPUTF8 not offered, utf8 sender",
        EHLO + U_FROM,
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
        smtputf8=False,
    ),
]

LIMITS = [
    case("command line 512", EHLO + cmd_line(512), ["250", OK], ["Helo", "Noop"]),
    case(
        "command line 513",
        EHLO + cmd_line(513) + NOOP,
        ["250", BAD_CHARS, OK],
        ["Helo", "Rejected:line_too_long", "Noop"],
    ),
    case(
        "command line 513, next command in the same chunk",
        [EHLO, cmd_line(513) + NOOP],
        ["250", BAD_CHARS, OK],
        ["Helo", "Rejected:line_too_long", "Noop"],
    ),
    case(
        "command line 5000 in pieces",
        [EHLO, *[b"x" * 1000] * 5, b"\r\n", NOOP],
        ["250", BAD_CHARS, OK],
        ["Helo", "Rejected:line_too_long", "Noop"],
    ),
    case(
        "mail line 512",
        EHLO + cmd_line(512, b"MAIL FROM:<a@example.org> SIZE=1 X"),
        ["250", PARAMS],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "path 256",
        EHLO + b"MAIL FROM:" + path_of(256) + b"\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "path 257",
        EHLO + b"MAIL FROM:" + path_of(257) + b"\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "rcpt path 256",
        EHLO + MAIL + b"RCPT TO:" + path_of(256) + b"\r\n",
        ["250", OK_MAIL, OK_RCPT],
        ["Helo", "MailFrom", "RcptTo"],
    ),
    case(
        "rcpt path 257",
        EHLO + MAIL + b"RCPT TO:" + path_of(257) + b"\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "source route counts in the path",
        EHLO + b"MAIL FROM:<@" + domain_of(100).encode() + b":" + path_of(156)[1:] + b"\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "UTF-8 local part of 32 characters, 64 octets",
        EHLO + ("MAIL FROM:<" + "\u00e9" * 32 + "@example.org> SMTPUTF8\r\n").encode(),
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "UTF-8 local part of 33 characters, 66 octets: the limit counts octets",
        EHLO + ("MAIL FROM:<" + "\u00e9" * 33 + "@example.org> SMTPUTF8\r\n").encode(),
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "local part 64",
        EHLO + b"MAIL FROM:<" + b"l" * 64 + b"@example.org>\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "local part 65",
        EHLO + b"MAIL FROM:<" + b"l" * 65 + b"@example.org>\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "rcpt local part 65",
        EHLO + MAIL + b"RCPT TO:<" + b"l" * 65 + b"@example.net>\r\n",
        ["250", OK_MAIL, BAD_TO],
        ["Helo", "MailFrom", "Rejected:syntax"],
    ),
    case(
        "quoted local part 64",
        EHLO + b'MAIL FROM:<"' + b"q" * 62 + b'"@example.org>\r\n',
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
    ),
    case(
        "quoted local part 65",
        EHLO + b'MAIL FROM:<"' + b"q" * 63 + b'"@example.org>\r\n',
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
    ),
    case(
        "domain 255",
        EHLO + b"MAIL FROM:<a@" + domain_of(255).encode() + b">\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
        max_path=1024,
    ),
    case(
        "domain 256",
        EHLO + b"MAIL FROM:<a@" + domain_of(256).encode() + b">\r\n",
        ["250", BAD_FROM],
        ["Helo", "Rejected:syntax"],
        max_path=1024,
    ),
    case("helo name 255", b"EHLO " + domain_of(255).encode() + b"\r\n", ["250"], ["Helo"]),
    case(
        "helo name 256", b"EHLO " + domain_of(256).encode() + b"\r\n", [SYNTAX], ["Rejected:syntax"]
    ),
    case(
        "text line 1000",
        EHLO + MAIL + RCPT + DATA + text_line(1000) + b".\r\n",
        ["250", *TX_R],
        ["Helo", *TX_E],
    ),
    case(
        "text line 1001",
        EHLO + MAIL + RCPT + DATA + text_line(1001) + b".\r\n" + NOOP,
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD, OK],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "MessageAborted:line_too_long",
            "Rejected:line_too_long",
            "Noop",
        ],
    ),
    case(
        "text line 5000 in pieces",
        [EHLO, MAIL, RCPT, DATA, *[b"y" * 999] * 5, b"\r\n.\r\n"],
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "MessageAborted:line_too_long",
            "Rejected:line_too_long",
        ],
    ),
    # RFC 5321 4.5.3.1.6: 1000 octets "not counting the leading dot duplicated for transparency"
    case(
        "dot-stuffed text line 1000",
        EHLO + MAIL + RCPT + DATA + text_line(1001, b".") + b".\r\n",
        ["250", *TX_R],
        ["Helo", *TX_E],
    ),
    case(
        "dot-stuffed text line 1001",
        EHLO + MAIL + RCPT + DATA + text_line(1002, b".") + b".\r\n",
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "MessageAborted:line_too_long",
            "Rejected:line_too_long",
        ],
    ),
    case(
        "SIZE at the limit",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1024\r\n",
        ["250", OK_MAIL],
        ["Helo", "MailFrom"],
        max_message_size=1024,
    ),
    case(
        "SIZE over the limit",
        EHLO + b"MAIL FROM:<a@example.org> SIZE=1025\r\n",
        ["250", TOO_BIG],
        ["Helo", "Rejected:message_too_big"],
        max_message_size=1024,
    ),
    case(
        "message at the limit",
        EHLO + MAIL + RCPT + DATA + body_of(1024) + b".\r\n",
        ["250", *TX_R],
        ["Helo", *TX_E],
        max_message_size=1024,
    ),
    case(
        "message over the limit",
        EHLO + MAIL + RCPT + DATA + body_of(1025) + b".\r\n" + NOOP,
        ["250", OK_MAIL, OK_RCPT, GO, TOO_BIG, OK],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "DataChunk",
            "MessageAborted:message_too_big",
            "Rejected:message_too_big",
            "Noop",
        ],
        max_message_size=1024,
    ),
    case(
        "message over the limit in one chunk",
        [EHLO, MAIL, RCPT, DATA, body_of(5000) + b".\r\n"],
        ["250", OK_MAIL, OK_RCPT, GO, TOO_BIG],
        [
            "Helo",
            "MailFrom",
            "RcptTo",
            "DataStart",
            "MessageAborted:message_too_big",
            "Rejected:message_too_big",
        ],
        max_message_size=1024,
    ),
    case(
        "recipients at the limit",
        [EHLO, MAIL + RCPT * 3 + DATA, MSG],
        ["250", OK_MAIL, *[OK_RCPT] * 3, GO, OK],
        ["Helo", "MailFrom", *["RcptTo"] * 3, "DataStart", "DataChunk", "MessageEnd"],
        max_recipients=3,
    ),
    case(
        "recipients over the limit",
        [EHLO, MAIL + RCPT * 4 + DATA, MSG],
        ["250", OK_MAIL, *[OK_RCPT] * 3, "452 4.5.3", GO, OK],
        [
            "Helo",
            "MailFrom",
            *["RcptTo"] * 3,
            "Rejected:too_many_recipients",
            "DataStart",
            "DataChunk",
            "MessageEnd",
        ],
        max_recipients=3,
    ),
    case(
        "100 recipients, default",
        [EHLO, MAIL + RCPT * 101],
        ["250", OK_MAIL, *[OK_RCPT] * 100, "452 4.5.3"],
        ["Helo", "MailFrom", *["RcptTo"] * 100, "Rejected:too_many_recipients"],
    ),
    case(
        "unknown commands below the limit",
        EHLO + b"FOO\r\n" * 2 + NOOP,
        ["250", UNKNOWN, UNKNOWN, OK],
        ["Helo", *["Rejected:unknown_command"] * 2, "Noop"],
        max_unknown_commands=3,
    ),
    case(
        "unknown commands at the limit",
        EHLO + b"FOO\r\n" * 3 + NOOP,
        ["250", UNKNOWN, UNKNOWN, UNKNOWN, CLOSING],
        ["Helo", *["Rejected:unknown_command"] * 3, "Rejected:too_many_unknown"],
        True,
        max_unknown_commands=3,
    ),
    case(
        "unknown commands, default limit 10",
        EHLO + b"FOO\r\n" * 11,
        ["250", *[UNKNOWN] * 10, CLOSING],
        ["Helo", *["Rejected:unknown_command"] * 10, "Rejected:too_many_unknown"],
        True,
    ),
    case(
        "errors below the limit",
        MAIL + b"EHLO\r\n" + NOOP,
        [SEQ, SYNTAX, OK],
        ["Rejected:bad_sequence", "Rejected:syntax", "Noop"],
        max_errors=3,
    ),
    case(
        "errors at the limit",
        MAIL + b"EHLO\r\n" + b"NOOP\n" + NOOP,
        [SEQ, SYNTAX, BAD_CHARS, CLOSING],
        [
            "Rejected:bad_sequence",
            "Rejected:syntax",
            "Rejected:bare_eol",
            "Rejected:too_many_errors",
        ],
        True,
        max_errors=3,
    ),
    case(
        "unknown commands count as errors",
        EHLO + b"FOO\r\n" * 3,
        ["250", UNKNOWN, UNKNOWN, UNKNOWN, CLOSING],
        ["Helo", *["Rejected:unknown_command"] * 3, "Rejected:too_many_errors"],
        True,
        max_errors=3,
    ),
    case(
        "errors, default limit 20",
        EHLO + MAIL * 21,
        ["250", OK_MAIL, *[SEQ] * 20, CLOSING],
        ["Helo", "MailFrom", *["Rejected:bad_sequence"] * 20, "Rejected:too_many_errors"],
        True,
    ),
]

DATA_TABLE = [
    case(
        "NUL in data",
        EHLO + MAIL + RCPT + DATA + b"a\x00b\r\nmore\r\n.\r\n" + TX,
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD, *TX_R],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "MessageAborted:nul", "Rejected:nul", *TX_E],
    ),
    case(
        "bare LF in data",
        EHLO + MAIL + RCPT + DATA + b"a\nb\r\n.\r\n",
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "MessageAborted:bare_eol", "Rejected:bare_eol"],
        True,
    ),
    case(
        "bare CR in data",
        EHLO + MAIL + RCPT + DATA + b"a\rb\r\n.\r\n",
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "MessageAborted:bare_eol", "Rejected:bare_eol"],
        True,
    ),
    case(
        "bare LF in data, normalise",
        EHLO + MAIL + RCPT + DATA + b"a\nb\r\n.\r\n",
        ["250", *TX_R],
        ["Helo", *TX_E],
        bare_line_endings="normalise",
    ),
    case(
        "bare LF dot LF does not end data, normalise",
        [EHLO, MAIL, RCPT, DATA, b"a\n.\nb\r\n", b".\r\n"],
        ["250", *TX_R],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "DataChunk", "MessageEnd"],
        bare_line_endings="normalise",
    ),
    case(
        "NUL in data, normalise",
        EHLO + MAIL + RCPT + DATA + b"\x00\r\n.\r\n",
        ["250", OK_MAIL, OK_RCPT, GO, DATA_BAD],
        ["Helo", "MailFrom", "RcptTo", "DataStart", "MessageAborted:nul", "Rejected:nul"],
        bare_line_endings="normalise",
    ),
    case(
        "negative answer at end of data",
        EHLO + TX + TX,
        ["250", *TX_R, *TX_R],
        ["Helo", *TX_E, *TX_E],
    ),
]

PIPELINING = [
    case(
        "pipelined transaction",
        [EHLO, MAIL + RCPT + RCPT + DATA, MSG + QUIT],
        ["250", OK_MAIL, OK_RCPT, OK_RCPT, GO, OK, BYE],
        ["Helo", "MailFrom", "RcptTo", "RcptTo", "DataStart", "DataChunk", "MessageEnd", "Quit"],
        True,
    ),
    case(
        "pipelined rset and mail",
        [EHLO, b"RSET\r\n" + MAIL + RCPT],
        ["250", OK, OK_MAIL, OK_RCPT],
        ["Helo", "Rset", "MailFrom", "RcptTo"],
    ),
    case(
        "pipelined after end of data",
        [EHLO, MAIL + RCPT + DATA, MSG + MAIL + RCPT + DATA, MSG],
        ["250", *TX_R, *TX_R],
        ["Helo", *TX_E, *TX_E],
    ),
    case("ehlo not last", [EHLO + MAIL], [SYNC], ["Rejected:pipelining"], True),
    case("helo not last", [HELO + MAIL], [SYNC], ["Rejected:pipelining"], True),
    case(
        "data not last",
        [EHLO, MAIL + RCPT + DATA + b"Subject: x\r\n"],
        ["250", OK_MAIL, OK_RCPT, SYNC],
        ["Helo", "MailFrom", "RcptTo", "Rejected:pipelining"],
        True,
    ),
    case(
        "noop not last", [EHLO, NOOP + MAIL], ["250", SYNC], ["Helo", "Rejected:pipelining"], True
    ),
    case(
        "vrfy not last",
        [EHLO, b"VRFY x\r\n" + NOOP],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
    ),
    case(
        "expn not last",
        [EHLO, b"EXPN x\r\n" + NOOP],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
    ),
    case(
        "help not last",
        [EHLO, b"HELP\r\n" + NOOP],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
    ),
    case(
        "quit not last", [EHLO, QUIT + NOOP], ["250", SYNC], ["Helo", "Rejected:pipelining"], True
    ),
    case(
        "partial line after a last-in-group command",
        [EHLO, NOOP + b"MA"],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
    ),
    case(
        "pipelining in a HELO session",
        [HELO, MAIL + RCPT],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
    ),
    case("pipelining before any HELO", [b"RSET\r\n" + NOOP], [SYNC], ["Rejected:pipelining"], True),
    case(
        "pipelining not offered",
        [EHLO, MAIL + RCPT],
        ["250", SYNC],
        ["Helo", "Rejected:pipelining"],
        True,
        pipelining=False,
    ),
    case("pregreet", EHLO, [], ["Rejected:pregreet"], True, pregreet=b"EHLO early\r\n"),
    case("pregreet, a single byte", EHLO, [], ["Rejected:pregreet"], True, pregreet=b"\r"),
]

NON_SMTP_TABLE = [
    case(
        "http get", b"GET / HTTP/1.1\r\nHost: mx\r\n\r\n", [NON_SMTP], ["Rejected:non_smtp"], True
    ),
    case(
        "http post after ehlo",
        EHLO + b"POST /form HTTP/1.0\r\n",
        ["250", NON_SMTP],
        ["Helo", "Rejected:non_smtp"],
        True,
    ),
    case("http connect", b"CONNECT mx:25 HTTP/1.1\r\n", [NON_SMTP], ["Rejected:non_smtp"], True),
    case("header line before helo", b"Host: mx.test\r\n", [NON_SMTP], ["Rejected:non_smtp"], True),
    case("pop3 user", b"USER bob\r\n", [NON_SMTP], ["Rejected:non_smtp"], True),
    case(
        "tls client hello",
        [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32],
        [NON_SMTP],
        ["Rejected:non_smtp"],
        True,
    ),
    case(
        "tls client hello after ehlo",
        [EHLO, b"\x16\x03\x03\x00\x10"],
        ["250", NON_SMTP],
        ["Helo", "Rejected:non_smtp"],
        True,
    ),
    case(
        "tls client hello split",
        [b"\x16", b"\x03\x01\x00"],
        [NON_SMTP],
        ["Rejected:non_smtp"],
        True,
    ),
    case(
        "sslv2 client hello",
        [b"\x80\x2e\x01\x00\x02\x00\x15"],
        [NON_SMTP],
        ["Rejected:non_smtp"],
        True,
    ),
]

STARTTLS_TABLE = [
    case(
        "starttls not offered",
        EHLO + b"STARTTLS\r\n",
        ["250", NOT_IMPL],
        ["Helo", "Rejected:not_implemented"],
    ),
    case(
        "starttls",
        EHLO + b"STARTTLS\r\n" + EHLO + TX,
        ["250", "220 2.0.0", "250", *TX_R],
        ["Helo", "StartTls", "Helo", *TX_E],
        tls_available=True,
    ),
    case(
        "ehlo required after tls",
        EHLO + b"STARTTLS\r\n" + MAIL + EHLO + MAIL,
        ["250", "220 2.0.0", SEQ, "250", OK_MAIL],
        ["Helo", "StartTls", "Rejected:bad_sequence", "Helo", "MailFrom"],
        tls_available=True,
    ),
    case(
        "transaction dropped by tls",
        EHLO + MAIL + b"STARTTLS\r\n" + EHLO + RCPT,
        ["250", OK_MAIL, "220 2.0.0", "250", SEQ],
        ["Helo", "MailFrom", "StartTls", "Helo", "Rejected:bad_sequence"],
        tls_available=True,
    ),
    case(
        "injection after starttls",
        [EHLO, b"STARTTLS\r\nMAIL FROM:<evil@x.example>\r\n" + RCPT, EHLO, RCPT],
        ["250", "220 2.0.0", "250", SEQ],
        ["Helo", "StartTls", "Helo", "Rejected:bad_sequence"],
        tls_available=True,
    ),
    case(
        "injected ehlo after starttls",
        [EHLO, b"STARTTLS\r\nEHLO evil\r\n", MAIL],
        ["250", "220 2.0.0", SEQ],
        ["Helo", "StartTls", "Rejected:bad_sequence"],
        tls_available=True,
    ),
    case(
        "starttls twice",
        EHLO + b"STARTTLS\r\n" + EHLO + b"STARTTLS\r\n",
        ["250", "220 2.0.0", "250", SEQ],
        ["Helo", "StartTls", "Helo", "Rejected:bad_sequence"],
        tls_available=True,
    ),
    case(
        "starttls on implicit tls",
        EHLO + b"STARTTLS\r\n",
        ["250", SEQ],
        ["Helo", "Rejected:bad_sequence"],
        tls_available=True,
        tls_active=True,
    ),
]


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), GOOD)
def test_good_syntax(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), BAD_SYNTAX)
def test_bad_syntax(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), PARAMS_TABLE)
def test_params(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), SEQUENCE)
def test_sequence(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), EIGHT_BIT)
def test_eight_bit(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), LIMITS)
def test_limits(data, replies, events, closes, options):
    run = check(data, replies, events, closes, options)
    limit = run.conn.limits.max_message_size
    assert len(run.content) <= limit


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), DATA_TABLE)
def test_data(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), PIPELINING)
def test_pipelining(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), NON_SMTP_TABLE)
def test_non_smtp(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


@pytest.mark.parametrize(("data", "replies", "events", "closes", "options"), STARTTLS_TABLE)
def test_starttls(data, replies, events, closes, options):
    check(data, replies, events, closes, options)


# ------------------------------------------------------------- event contents
def test_event_fields():
    run = session(
        EHLO
        + b"MAIL FROM:<@relay.example:Alice@Example.ORG> SIZE=42 BODY=8bitmime SMTPUTF8\r\n"
        + b"RCPT TO:<Bob@Example.NET>\r\nRCPT TO:<postmaster>\r\nRCPT TO:<c@[IPv6:2001:DB8::1]>\r\n"
        + b"VRFY  bob \r\nEXPN staff\r\nHELP topic\r\n"
    )
    helo, mail, r1, r2, r3, vrfy, expn, help_ = run.events
    assert helo == Helo(name="client.example", extended=True)
    assert mail == MailFrom(address="Alice@Example.ORG", size=42, body="8BITMIME", smtputf8=True)
    assert r1 == RcptTo(address="Bob@Example.NET", domain="example.net")
    assert r2 == RcptTo(address="Postmaster", domain="")
    assert r3 == RcptTo(address="c@[IPv6:2001:DB8::1]", domain="[ipv6:2001:db8::1]")
    assert isinstance(vrfy, Vrfy) and vrfy.argument.strip() == "bob"
    assert expn == Expn(argument="staff")
    assert help_ == Help(argument="topic")


def test_null_sender_and_quoted_local_part_fields():
    run = session(EHLO + b"MAIL FROM:<>\r\n" + b'RCPT TO:<"john doe"@example.net>\r\n')
    assert run.of(MailFrom) == [MailFrom(address="")]
    assert run.of(RcptTo) == [RcptTo(address='"john doe"@example.net', domain="example.net")]


def test_utf8_addresses_are_decoded():
    run = session(EHLO + U_FROM + U_RCPT)
    assert run.of(MailFrom)[0].address == "j\u00f6rg@b\u00fccher.example"
    assert run.of(MailFrom)[0].smtputf8
    assert run.of(RcptTo)[0].domain == "\u00e9cole.example"


def test_greeting_and_ehlo_keywords():
    run = session(EHLO)
    greeting, ehlo = run.replies
    assert greeting.code == 220 and greeting.lines == ("mx.test ESMTP",)
    assert ehlo.lines == (
        "mx.test",
        "PIPELINING",
        "SIZE 26214400",
        "ENHANCEDSTATUSCODES",
        "8BITMIME",
        "SMTPUTF8",
    )
    assert "STARTTLS" in session(EHLO, tls_available=True).replies[1].lines
    assert "STARTTLS" not in session(EHLO, tls_available=True, tls_active=True).replies[1].lines
    quiet = session(EHLO, pipelining=False, smtputf8=False, max_message_size=2048).replies[1]
    assert quiet.lines == ("mx.test", "SIZE 2048", "ENHANCEDSTATUSCODES", "8BITMIME")
    no_8bit = session(EHLO, eightbitmime=False).replies[1]
    assert "8BITMIME" not in no_8bit.lines and "SMTPUTF8" in no_8bit.lines
    assert session(HELO).replies[1].lines == ("mx.test",)


def test_ehlo_after_tls_does_not_offer_starttls():
    run = session(EHLO + b"STARTTLS\r\n" + EHLO, tls_available=True)
    first, second = run.replies[1], run.replies[3]
    assert "STARTTLS" in first.lines and "STARTTLS" not in second.lines
    assert run.conn.tls_active


# ------------------------------------------------------------------ DATA content
def test_dot_stuffing_round_trip():
    original = [b"..", b".", b"...x", b" .", b"a.b", b".\t", b"", b"from the start", b".end"]
    stuffed = b"".join(
        (b"." + line if line.startswith(b".") else line) + b"\r\n" for line in original
    )
    run = session(EHLO + MAIL + RCPT + DATA + stuffed + b".\r\n")
    expected = b"".join(line + b"\r\n" for line in original)
    assert run.content == expected
    assert run.of(MessageEnd) == [MessageEnd(size=len(expected))]


def test_dot_stuffing_split_everywhere():
    body = b"..a\r\n.\r\n"
    for cut in range(1, len(body)):
        run = session([EHLO, MAIL, RCPT, DATA, body[:cut], body[cut:]])
        assert run.content == b".a\r\n", cut
        assert len(run.of(MessageEnd)) == 1


def test_normalised_content():
    run = session(
        EHLO + MAIL + RCPT + DATA + b"a\nb\rc\r\r\n..d\n.e\r\n.\r\n", bare_line_endings="normalise"
    )
    # a dot is undone only at the start of a line that followed a real CRLF
    assert run.content == b"a\r\nb\r\nc\r\n\r\n.d\r\n.e\r\n"
    assert run.of(MessageEnd)[0].size == len(run.content)


def test_oversized_message_discarded():
    body = (b"x" * 98 + b"\r\n") * 30  # 3000 octets, one line at a time
    run = session(EHLO + MAIL + RCPT + DATA + body + b".\r\n" + TX, max_message_size=1024)
    assert run.codes == ["250", OK_MAIL, OK_RCPT, GO, TOO_BIG, *TX_R]
    first = run.events[: run.events.index(run.of(MessageAborted)[0])]
    assert sum(len(ev.data) for ev in first if isinstance(ev, DataChunk)) <= 1024
    assert not any(isinstance(ev, MessageEnd) for ev in first)
    after_abort = run.events[run.events.index(run.of(MessageAborted)[0]) :]
    assert [type(ev).__name__ for ev in after_abort[:3]] == [
        "MessageAborted",
        "Rejected",
        "MailFrom",
    ]
    assert len(run.of(MessageEnd)) == 1  # the second transaction's


def test_long_line_then_nul_reports_the_first_problem():
    # What the engine reports must not depend on how the bytes were cut into chunks.
    body = b"y" * 1500 + b"\x00\r\n.\r\n"
    whole = session([EHLO, MAIL, RCPT, DATA, body])
    cut = session([EHLO, MAIL, RCPT, DATA, body[:1200], body[1200:]])
    assert whole.codes == cut.codes
    assert whole.types == cut.types
    assert whole.replies[-1].text.startswith("Message rejected: line longer")


def test_problems_after_the_size_limit_are_not_looked_at():
    body = (b"x" * 98 + b"\r\n") * 20 + b"bare\nLF\r\n.\r\n" + NOOP
    whole = session([EHLO, MAIL, RCPT, DATA, body], max_message_size=1024)
    cut = session([EHLO, MAIL, RCPT, DATA, *lockstep(body)], max_message_size=1024)
    assert whole.codes == cut.codes == ["250", OK_MAIL, OK_RCPT, GO, TOO_BIG, OK]
    assert not whole.closed


# ---------------------------------------------------------------- SMTP smuggling
SMUGGLED = b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n.\r\n"
SMUGGLING = [
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
    b"\r\r\n.\r\r\n",
]


@pytest.mark.parametrize("mode", ["reject", "normalise"])
@pytest.mark.parametrize("feed", ["whole", "bytewise"])
@pytest.mark.parametrize("seq", SMUGGLING, ids=[repr(s)[2:-1] for s in SMUGGLING])
def test_smuggling(seq, feed, mode):
    data = b"Subject: hello\r\n\r\nbody" + seq + SMUGGLED + b"\r\n.\r\n"
    chunks = [data] if feed == "whole" else [data[i : i + 1] for i in range(len(data))]
    run = session([EHLO, MAIL, RCPT, DATA, *chunks], bare_line_endings=mode)
    assert len(run.of(MessageEnd)) <= 1
    assert len(run.of(MailFrom)) == 1
    assert len(run.of(DataStart)) == 1
    assert all(ev.address != "v@y" for ev in run.of(RcptTo))
    if b"\x00" in seq:
        assert run.of(MessageAborted) == [MessageAborted("nul")]
        assert DATA_BAD in run.codes
        assert not run.of(MessageEnd)
    elif mode == "reject":
        assert run.of(MessageAborted) == [MessageAborted("bare_eol")]
        assert run.codes[-1] == DATA_BAD
        assert run.closed and not run.of(MessageEnd)
    else:
        (end,) = run.of(MessageEnd)
        assert b"MAIL FROM:<evil@x>\r\n" in run.content
        assert b"smuggled\r\n" in run.content
        assert end.size == len(run.content)


# ------------------------------------------------------------ app-driven paths
def answering(**replies: Reply) -> Answer:
    """Answer the named event types with the given replies, accept the rest."""

    def answer(conn: ServerConnection, ev: Command) -> None:
        r = replies.get(type(ev).__name__)
        conn.send(r) if r is not None else conn.accept()

    return answer


def test_rejected_mail_leaves_state_unchanged():
    no = reply(550, "5.7.1", "Sender refused")
    run = session(EHLO + MAIL + RCPT, answer=answering(MailFrom=no))
    assert run.codes == ["250", "550 5.7.1", SEQ]
    assert run.conn.envelope is None
    run = session(EHLO + MAIL + MAIL, answer=answering(MailFrom=no))
    assert run.codes == ["250", "550 5.7.1", "550 5.7.1"]  # not "nested MAIL"


def test_rejected_rcpt_leaves_state_unchanged():
    no = reply(550, "5.1.1", "No such user")
    run = session(EHLO + MAIL + RCPT + DATA, answer=answering(RcptTo=no))
    assert run.codes == ["250", OK_MAIL, "550 5.1.1", "503 5.5.1"]
    assert run.conn.envelope is not None and run.conn.envelope.rcpt_to == []


def test_rejected_rcpts_do_not_count_towards_the_recipient_limit():
    no = reply(450, "4.2.0", "Later")
    run = session([EHLO, MAIL + RCPT * 5], answer=answering(RcptTo=no), max_recipients=2)
    assert run.codes == ["250", OK_MAIL, *["450 4.2.0"] * 5]


def test_rejected_data_stays_in_command_phase():
    run = session(
        EHLO + MAIL + RCPT + DATA + b"NOOP\r\n",
        answer=answering(DataStart=reply(451, "4.3.0", "Not now")),
    )
    assert run.codes == ["250", OK_MAIL, OK_RCPT, "451 4.3.0", OK]
    assert run.of(DataChunk) == []


def test_rejected_message_end():
    run = session(EHLO + TX + RCPT, answer=answering(MessageEnd=reply(554, "5.7.1", "Spam")))
    assert run.codes == ["250", OK_MAIL, OK_RCPT, GO, "554 5.7.1", SEQ]


def test_send_close():
    def answer(conn: ServerConnection, ev: Command) -> None:
        if isinstance(ev, MailFrom):
            conn.send(reply(554, "5.7.1", "Go away"), close=True)
        else:
            conn.accept()

    run = session(EHLO + MAIL + RCPT, answer=answer)
    assert run.codes == ["250", "554 5.7.1"]
    assert run.closed
    assert run.conn.next_event() is CLOSED
    run.conn.receive_data(NOOP)
    assert run.conn.next_event() is CLOSED
    assert run.conn.data_to_send() == b""


def test_send_421_closes():
    run = session(EHLO + MAIL, answer=answering(MailFrom=reply(421, "4.3.2", "Bye")))
    assert run.codes == ["250", "421 4.3.2"]
    assert run.closed


def new_conn(**limits: Any) -> ServerConnection:
    conn = ServerConnection(engine_limits(SmtpSettings(**limits)), "mx.test", tls_available=True)
    conn.greeting()
    return conn


def step(conn: ServerConnection, data: bytes) -> Event | object:
    conn.receive_data(data)
    return conn.next_event()


def test_data_accept_requires_354():
    conn = new_conn()
    for line in (EHLO, MAIL, RCPT):
        step(conn, line)
        conn.accept()
        assert conn.next_event() is NEED_DATA
    assert step(conn, DATA) == DataStart()
    with pytest.raises(ValueError):
        conn.send(reply(250, "2.0.0", "Ok"))
    # the misuse changed nothing: DATA still waits for its answer
    assert conn.next_event() is PAUSED
    conn.send(reply(354, None, "Go ahead"))
    assert conn.phase is Phase.DATA
    assert conn.data_to_send().endswith(b"354 Go ahead\r\n")


def test_starttls_accept_requires_220():
    conn = new_conn()
    step(conn, EHLO)
    conn.accept()
    conn.next_event()
    assert step(conn, b"STARTTLS\r\n") == StartTls()
    with pytest.raises(ValueError):
        conn.send(reply(250, "2.0.0", "Ok"))
    assert conn.next_event() is PAUSED
    conn.accept()
    assert conn.phase is Phase.TLS


def test_misuse_raises():
    conn = ServerConnection(engine_limits(SmtpSettings()), "mx.test")
    with pytest.raises(RuntimeError):
        conn.accept()
    with pytest.raises(RuntimeError):
        conn.send(reply(250, None, "x"))
    with pytest.raises(RuntimeError):
        conn.tls_started()
    conn.greeting()
    with pytest.raises(RuntimeError):
        conn.greeting()
    assert step(conn, NOOP) is not None
    conn.accept()
    with pytest.raises(RuntimeError):
        conn.accept()


def test_paused_until_answered():
    conn = new_conn()
    assert step(conn, EHLO) == Helo("client.example", True)
    assert conn.next_event() is PAUSED
    assert conn.next_event() is PAUSED
    conn.accept()
    assert conn.next_event() is NEED_DATA


# ------------------------------------------------------------ timing-dependent
def test_data_arriving_while_last_in_group_command_waits():
    conn = new_conn()
    assert step(conn, EHLO) == Helo("client.example", True)
    conn.receive_data(MAIL)  # sent before the EHLO reply
    conn.accept()
    ev = conn.next_event()
    assert isinstance(ev, Rejected) and ev.reason == "pipelining"
    assert conn.next_event() is CLOSED
    assert conn.data_to_send().endswith(b"554 5.5.0 Error: SMTP protocol synchronization\r\n")


def test_data_arriving_while_mail_waits_in_helo_session():
    conn = new_conn()
    step(conn, HELO)
    conn.accept()
    assert conn.next_event() is NEED_DATA
    assert isinstance(step(conn, MAIL), MailFrom)
    conn.receive_data(RCPT)  # no PIPELINING in a HELO session
    conn.accept()
    ev = conn.next_event()
    assert isinstance(ev, Rejected) and ev.reason == "pipelining"
    assert conn.next_event() is CLOSED


def test_data_arriving_while_mail_waits_in_ehlo_session_is_fine():
    conn = new_conn()
    step(conn, EHLO)
    conn.accept()
    conn.next_event()
    assert isinstance(step(conn, MAIL), MailFrom)
    conn.receive_data(RCPT)
    conn.accept()
    assert isinstance(conn.next_event(), RcptTo)


def test_data_arriving_while_message_end_waits_is_fine():
    conn = new_conn()
    for line in (HELO, MAIL, RCPT, DATA):
        step(conn, line)
        conn.accept()
        conn.next_event()
    conn.receive_data(b"x\r\n.\r\n")
    assert isinstance(conn.next_event(), DataChunk)
    assert isinstance(conn.next_event(), MessageEnd)
    conn.receive_data(QUIT)
    conn.accept()
    assert conn.next_event() == Quit()


def test_injection_while_starttls_waits_is_discarded():
    conn = new_conn()
    step(conn, EHLO)
    conn.accept()
    conn.next_event()
    assert step(conn, b"STARTTLS\r\n") == StartTls()
    evil = [b"MAIL FROM:<evil@x.example>\r\n", b"RCPT TO:<evil@x.example>\r\n"]
    conn.receive_data(evil[0])  # before the 220 and the handshake
    conn.accept()
    assert conn.next_event() is PAUSED
    conn.receive_data(evil[1])  # during the handshake
    assert conn.next_event() is PAUSED
    conn.tls_started()
    assert conn.next_event() is NEED_DATA
    assert conn.discarded_after_starttls == len(evil[0]) + len(evil[1])
    assert isinstance(step(conn, MAIL), Rejected)  # EHLO again first


def test_injection_counted_when_in_the_same_chunk():
    conn = new_conn()
    step(conn, EHLO)
    conn.accept()
    conn.next_event()
    evil = b"MAIL FROM:<evil@x.example>\r\n"
    assert step(conn, b"STARTTLS\r\n" + evil) == StartTls()
    assert conn.discarded_after_starttls == len(evil)


def test_greeting_refusal_for_pregreet_ignores_content():
    conn = ServerConnection(engine_limits(SmtpSettings()), "mx.test")
    conn.receive_data(b"EHLO x\r\n")
    conn.greeting()
    ev = conn.next_event()
    assert isinstance(ev, Rejected) and ev.reason == "pregreet"
    assert conn.data_to_send() == b"554 5.5.0 Error: client sent data before the greeting\r\n"
    assert conn.next_event() is CLOSED


def test_eof_before_greeting_is_not_pregreet():
    conn = ServerConnection(engine_limits(SmtpSettings()), "mx.test")
    conn.receive_data(b"")
    conn.greeting()
    assert conn.data_to_send().startswith(b"220 ")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_recipients_over_the_limit_get_452_without_counting_as_errors() -> None:
    """RFC 5321 §4.5.3.1.10: the client is expected to send the rest in another transaction,
    so the 452s must not push it into the error limit and a 421 (it could never deliver)."""
    rcpts = b"".join(b"RCPT TO:<u%d@example.net>\r\n" % i for i in range(130))
    run = session([EHLO, MAIL + rcpts + DATA, MSG], max_recipients=100, max_errors=20)
    assert run.codes.count("250 2.1.5") == 100
    assert run.codes.count("452 4.5.3") == 30
    assert "421 4.7.0" not in run.codes and run.codes[-1] == "250 2.0.0"
