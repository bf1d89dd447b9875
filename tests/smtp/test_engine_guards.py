"""Edges of the engine's command side that mutation testing (scripts/mutation over
smtp/connection.py) showed no test held: MAIL parameters are matched by their exact name, a
command line that reaches the limit without a line end is answered at once, and the engine
refuses to apply STARTTLS on any positive reply but 220."""

from __future__ import annotations

import pytest

from mailmoat.config import SmtpSettings
from mailmoat.smtp.connection import ServerConnection
from mailmoat.smtp.events import (
    Command,
    DataStart,
    Event,
    MailFrom,
    Noop,
    RcptTo,
    Rejected,
    StartTls,
)
from mailmoat.smtp.replies import ReplyParser, reply
from tests.smtp.test_connection import DATA, EHLO, HELO, MAIL, NOOP, PARAMS, RCPT, drain, session


@pytest.mark.parametrize(
    "param",
    [
        # a value SIZE or BODY would take, under a name sorting before or after theirs
        b"AAAA=10",
        b"ZZZZ=10",
        b"AUTH=10",
        b"XSIZE=10",
        b"AAAA=7BIT",
        b"ZZZZ=7BIT",
        b"AAAA=8BITMIME",
        b"ZZZZ=8BITMIME",
        b"SMTPUTF8=1",
        b"SMTPUTF8=8BITMIME",
    ],
)
def test_mail_parameters_are_known_by_their_exact_name(param: bytes) -> None:
    """RFC 5321 4.1.1.11: a parameter not offered is refused (555); none is taken for SIZE,
    BODY or SMTPUTF8 because its value would fit one of them."""
    run = session(EHLO + b"MAIL FROM:<a@example.org> " + param + b"\r\n", smtputf8=True)
    assert run.codes[-1] == PARAMS, run.codes
    assert not run.of(MailFrom)
    assert run.of(Rejected)[-1].reason == "syntax"


def test_the_known_parameters_are_taken() -> None:
    run = session(
        EHLO + b"MAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME SMTPUTF8\r\n", smtputf8=True
    )
    assert run.of(MailFrom) == [
        MailFrom(address="a@example.org", size=10, body="8BITMIME", smtputf8=True)
    ]


@pytest.mark.parametrize("limit", [512, 1000])
def test_a_command_line_reaching_the_limit_without_its_end_is_answered_at_once(
    limit: int,
) -> None:
    """`max_command_line` octets with no LF among them can no longer be a legal line: the
    client hears 500 5.5.2 now, not after it sends more (a client waiting for an answer would
    otherwise hang until the command timeout), and the rest of that line is skipped."""
    conn = ServerConnection(SmtpSettings(max_command_line=limit), "mx.test")
    events: list[Event] = []
    conn.greeting()
    conn.receive_data(EHLO)
    drain(conn, events, None)
    conn.data_to_send()
    conn.receive_data(b"NOOP " + b"x" * (limit - 5))
    drain(conn, events, None)
    [answer] = ReplyParser().feed(conn.data_to_send())
    assert (answer.code, answer.enhanced) == (500, "5.5.2")
    assert isinstance(events[-1], Rejected) and events[-1].reason == "line_too_long"
    conn.receive_data(b"yyy\r\nNOOP\r\n")  # the rest of the long line, then a good command
    drain(conn, events, None)
    assert [type(e) for e in events[-2:]] == [Rejected, Noop]
    assert [r.code for r in ReplyParser().feed(conn.data_to_send())] == [250]


def test_a_line_one_octet_under_the_limit_waits_for_its_end() -> None:
    conn = ServerConnection(SmtpSettings(), "mx.test")
    events: list[Event] = []
    conn.greeting()
    conn.receive_data(EHLO)
    drain(conn, events, None)
    conn.data_to_send()
    conn.receive_data(b"NOOP " + b"x" * (512 - 7) + b"\r")  # 511 octets: the LF may still come
    drain(conn, events, None)
    assert conn.data_to_send() == b""
    conn.receive_data(b"\n")
    drain(conn, events, None)
    assert isinstance(events[-1], Noop)


@pytest.mark.parametrize("code", [211, 214, 250])
def test_starttls_cannot_be_accepted_with_another_positive_reply(code: int) -> None:
    """Only 220 starts TLS (RFC 3207): any other positive answer to STARTTLS is a programming
    error of the caller, refused before the engine changes state."""
    conn = ServerConnection(SmtpSettings(), "mx.test", tls_available=True)
    events: list[Event] = []
    conn.greeting()
    conn.receive_data(EHLO)
    drain(conn, events, None)
    conn.receive_data(b"STARTTLS\r\n")
    assert isinstance(conn.next_event(), StartTls)
    with pytest.raises(ValueError, match="STARTTLS"):
        conn.send(reply(code, None, "go ahead"))
    conn.send(reply(220, "2.0.0", "Ready to start TLS"))
    conn.tls_started()
    assert conn.tls_active


def test_an_empty_line_ended_by_a_bare_lf_is_answered_at_once() -> None:
    """A lone LF is a complete (bad) line: 500 5.5.2 now, not when more bytes come."""
    conn = ServerConnection(SmtpSettings(), "mx.test")
    events: list[Event] = []
    conn.greeting()
    conn.receive_data(EHLO)
    drain(conn, events, None)
    conn.data_to_send()
    conn.receive_data(b"\n")
    drain(conn, events, None)
    [answer] = ReplyParser().feed(conn.data_to_send())
    assert (answer.code, answer.enhanced) == (500, "5.5.2")
    assert isinstance(events[-1], Rejected) and events[-1].reason == "bare_eol"


@pytest.mark.parametrize("command", [b"RCPT TO:<bob@example.net>\r\n", b"DATA\r\n"])
def test_a_command_out_of_order_says_what_is_missing(command: bytes) -> None:
    before_helo = session(command)
    before_mail = session(EHLO + command)
    assert before_helo.codes == ["503 5.5.1"]
    assert before_mail.codes[-1] == "503 5.5.1"
    assert "HELO" in before_helo.replies[-1].text
    assert "MAIL" in before_mail.replies[-1].text


@pytest.mark.parametrize("code", [400, 450, 499, 550])
def test_any_refusal_of_rcpt_leaves_the_recipient_out(code: int) -> None:
    """The caller refuses RCPT with whatever 4xx or 5xx: the recipient is not added."""

    def answer(conn: ServerConnection, ev: Command) -> None:
        if isinstance(ev, RcptTo) and ev.address.startswith("no"):
            conn.send(reply(code, f"{code // 100}.0.0", "refused"))
        else:
            conn.accept()

    run = session(
        EHLO + b"MAIL FROM:<a@example.org>\r\nRCPT TO:<no@example.net>\r\n"
        b"RCPT TO:<yes@example.net>\r\n",
        answer=answer,
    )
    assert run.conn.envelope is not None
    assert run.conn.envelope.rcpt_to == ["yes@example.net"]
    assert run.conn.errors == 1


def test_the_error_that_reaches_max_errors_in_data_reports_in_order() -> None:
    """A refused message that is also the session's last allowed error queues three events at
    once; they come out in the order they happened: the message aborted, its refusal, then
    the closing refusal."""
    run = session(
        [EHLO, MAIL, RCPT, DATA, b"x" * 2000 + b"\r\n", b".\r\n"],
        max_errors=1,
    )
    assert run.types[-3:] == [
        "MessageAborted:line_too_long",
        "Rejected:line_too_long",
        "Rejected:too_many_errors",
    ]
    assert run.codes[-2:] == ["554 5.6.0", "421 4.7.0"]
    assert run.closed


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (EHLO + "ABCDEFGHIJKLMNOPQRSTUVWXYZ é\r\n".encode(), "8bit"),
        (b"X-Header-" + b"A" * 40 + b": value\r\n", "non_smtp"),
        (b"HELLO" + b"X" * 40 + b"\r\n", "unknown_command"),
    ],
)
def test_the_command_named_in_a_refusal_is_at_most_16_characters(line: bytes, reason: str) -> None:
    """The verb a refusal reports (for the log) is bounded, whatever the client sent: its
    first 16 characters."""
    run = session(line)
    [refused] = [e for e in run.of(Rejected) if e.reason == reason]
    assert len(refused.command) == 16
    assert line.split(b"\r\n")[-2].upper().startswith(refused.command.encode())


@pytest.mark.parametrize("verb", ["HELO", "EHLO"])
def test_a_bad_greeting_name_is_refused_in_the_clients_own_words(verb: str) -> None:
    run = session(verb.encode() + b" bad\x01name\r\n")
    assert run.codes == ["501 5.5.4"]
    assert run.replies[-1].text == f"Syntax: {verb} hostname"
    assert run.of(Rejected)[-1].command == verb


@pytest.mark.parametrize(
    ("commands", "verb", "code"),
    [
        (EHLO + b"MAIL FROM:<bad address>\r\n", "MAIL", "501 5.1.7"),
        (EHLO + MAIL + b"RCPT TO:<bad address>\r\n", "RCPT", "501 5.1.3"),
        (EHLO + MAIL + b"RCPT TO:<>\r\n", "RCPT", "501 5.1.3"),
    ],
)
def test_a_bad_address_is_reported_against_its_own_command(
    commands: bytes, verb: str, code: str
) -> None:
    run = session(commands)
    assert run.codes[-1] == code
    assert run.of(Rejected)[-1].command == verb


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("NOOP é\r\n".encode(), "8bit"),
        (b"NOOP\n", "bare_eol"),
        (b"NO\x00OP\r\n", "nul"),
        (b"FROB\r\n", "unknown_command"),
        (b"NOOP " + b"x" * 600 + b"\r\n", "line_too_long"),
        (b"\r\n", "syntax"),
        (b"NOOP \xff\r\n", "bad_utf8"),
        (b"MAIL FROM:<bad address>\r\n", "syntax"),
    ],
)
def test_the_error_that_reaches_max_errors_comes_before_the_close(line: bytes, reason: str) -> None:
    """Two events queued by one bad line come out in the order they happened."""
    run = session(EHLO + line, max_errors=1)
    assert run.types[-2:] == [f"Rejected:{reason}", "Rejected:too_many_errors"]
    assert run.codes[-1] == "421 4.7.0"


@pytest.mark.parametrize(
    ("digits", "code"),
    [
        (20, "552 5.3.4"),  # a SIZE the engine reads, far over the limit
        (21, PARAMS),  # longer than any SIZE: a malformed parameter
    ],
)
def test_size_has_at_most_20_digits(digits: int, code: str) -> None:
    run = session(EHLO + b"MAIL FROM:<a@example.org> SIZE=" + b"9" * digits + b"\r\n")
    assert run.codes[-1] == code
    assert not run.of(MailFrom)


@pytest.mark.parametrize("code", [250, 355])
def test_data_cannot_be_accepted_with_another_positive_reply(code: int) -> None:
    conn = ServerConnection(SmtpSettings(), "mx.test")
    events: list[Event] = []
    conn.greeting()
    for line in (EHLO, MAIL, RCPT):
        conn.receive_data(line)
        drain(conn, events, None)
    conn.receive_data(DATA)
    assert isinstance(conn.next_event(), DataStart)
    with pytest.raises(ValueError, match="354"):
        conn.send(reply(code, None, "go ahead"))
    conn.send(reply(354, None, "go ahead"))


@pytest.mark.parametrize("value", [b"0BIT", b"6BIT", b"7BITS", b"8BIT", b"9BITMIME", b"BINARYMIME"])
def test_body_takes_only_7bit_or_8bitmime(value: bytes) -> None:
    run = session(EHLO + b"MAIL FROM:<a@example.org> BODY=" + value + b"\r\n")
    assert run.codes[-1] == PARAMS
    assert not run.of(MailFrom)


def test_a_command_sent_ahead_of_its_turn_is_named_by_its_first_16_characters() -> None:
    """The refusal of a command that came before its turn (no PIPELINING after HELO) reports a
    bounded verb too."""
    long_verb = b"HELLO" + b"X" * 40
    run = session([HELO, long_verb + b"\r\n" + NOOP])
    [refused] = [e for e in run.of(Rejected) if e.reason == "pipelining"]
    assert refused.command == long_verb[:16].decode()
