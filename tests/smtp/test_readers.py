"""The engine's readers with bytes only, no connection in sight (the way h11 tests its readers
in `tests/test_io.py`): command framing, command lines, command arguments, message data."""

from __future__ import annotations

import dataclasses

import pytest

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.data import DataEnded, DataReader, DataRefused
from mailmoat.smtp.events import DataChunk, DataStart, Helo, MailFrom, RcptTo, Rejected, Rset
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.readers import (
    CommandLineReader,
    read_bare,
    read_command,
    read_helo,
    read_mail,
    read_rcpt,
    read_vrfy,
)
from mailmoat.smtp.writers import R_DATA_BARE_EOL, R_DATA_NUL, R_NON_SMTP, R_SYNTAX_LINE

LIMITS = engine_limits(SmtpSettings())


def limits(**changes: object) -> Limits:
    return dataclasses.replace(LIMITS, **changes)


def code(result: object) -> str:
    """A refusal as "reason code enhanced"."""
    assert isinstance(result, Rejected), result
    return f"{result.reason} {result.reply.code} {result.reply.enhanced}"


# ------------------------------------------------------------------ command lines
def test_a_line_is_cut_at_its_line_feed_and_the_rest_stays() -> None:
    buf = bytearray(b"EHLO a.test\r\nMAIL FR")
    lines = CommandLineReader(512)
    assert lines(buf) == b"EHLO a.test\r\n"
    assert buf == b"MAIL FR"
    assert lines(buf) is None
    assert buf == b"MAIL FR"


def test_the_longest_line_is_the_limit_crlf_included() -> None:
    lines = CommandLineReader(512)
    assert lines(bytearray(b"x" * 510 + b"\r\n")) == b"x" * 510 + b"\r\n"
    buf = bytearray(b"x" * 511 + b"\r\nNOOP\r\n")
    assert lines(buf) == Rejected("line_too_long", R_SYNTAX_LINE)
    assert buf == b"NOOP\r\n"


def test_an_over_long_line_is_dropped_as_it_comes() -> None:
    """No line feed within the limit: what the buffer holds goes, and so does the rest of the
    line in later reads, up to its line feed; the next line is read as usual."""
    lines = CommandLineReader(512)
    buf = bytearray(b"x" * 600)
    assert lines(buf) == Rejected("line_too_long", R_SYNTAX_LINE)
    assert buf == b""
    buf += b"y" * 5000
    assert lines(buf) is None
    assert buf == b""
    buf += b"yyy\r\nNOOP\r\n"
    assert lines(buf) == b"NOOP\r\n"


@pytest.mark.parametrize(
    "hello", [b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b"\x80\x2e\x01"]
)
def test_a_tls_handshake_is_not_a_command(hello: bytes) -> None:
    buf = bytearray(hello + b"\r\nEHLO a\r\n")
    assert CommandLineReader(512)(buf) == Rejected("non_smtp", R_NON_SMTP, "TLS handshake")
    assert buf == b""


@pytest.mark.parametrize(
    ("line", "helo_done", "expected"),
    [
        (b"mail FROM:<a@b.test>\r\n", False, ("MAIL", "FROM:<a@b.test>", False)),
        (b"NOOP\r\n", False, ("NOOP", "", False)),
        (b"RCPT TO:<j\xc3\xb6@b.test>\r\n", True, ("RCPT", "TO:<j\u00f6@b.test>", True)),
        (b"Subject: hi\r\n", True, ("SUBJECT:", "hi", False)),
    ],
)
def test_a_command_line_is_verb_argument_and_8bit(
    line: bytes, helo_done: bool, expected: tuple[str, str, bool]
) -> None:
    assert read_command(line, helo_done=helo_done) == expected


@pytest.mark.parametrize(
    ("line", "helo_done", "refusal"),
    [
        (b"NOOP\n", True, "bare_eol 500 5.5.2"),
        (b"NO\rOP\r\n", True, "bare_eol 500 5.5.2"),
        (b"NO\x00OP\r\n", True, "nul 500 5.5.2"),
        (b"MAIL FROM:<\xff@b.test>\r\n", True, "bad_utf8 500 5.5.2"),
        (b"\r\n", True, "syntax 500 5.5.2"),
        (b" NOOP\r\n", True, "syntax 500 5.5.2"),
        (b"GET / HTTP/1.1\r\n", True, "non_smtp 554 5.7.0"),
        (b"Subject: hi\r\n", False, "non_smtp 554 5.7.0"),
    ],
)
def test_a_bad_command_line_is_refused(line: bytes, helo_done: bool, refusal: str) -> None:
    assert code(read_command(line, helo_done=helo_done)) == refusal


# -------------------------------------------------------------- command arguments
def test_helo_takes_one_printable_token() -> None:
    assert read_helo(" mx.a.test ", extended=True, limits=LIMITS) == Helo("mx.a.test", True)
    assert code(read_helo("", extended=False, limits=LIMITS)) == "syntax 501 5.5.4"
    assert code(read_helo("a b", extended=False, limits=LIMITS)) == "syntax 501 5.5.4"
    assert code(read_helo("x" * 256, extended=False, limits=LIMITS)) == "syntax 501 5.5.4"


@pytest.mark.parametrize(
    ("arg", "eight_bit", "esmtp", "expected"),
    [
        ("FROM:<a@b.test>", False, False, MailFrom("a@b.test")),
        ("from: <>", False, False, MailFrom("")),
        (
            "FROM:<a@b.test> SIZE=100 BODY=8BITMIME",
            False,
            True,
            MailFrom("a@b.test", size=100, body="8BITMIME"),
        ),
        ("FROM:<j\u00f6@b.test> SMTPUTF8", True, True, MailFrom("j\u00f6@b.test", smtputf8=True)),
        ("FROM:<@relay.test:a@b.test>", False, False, MailFrom("a@b.test")),
    ],
)
def test_mail_reads_the_path_and_the_offered_parameters(
    arg: str, eight_bit: bool, esmtp: bool, expected: MailFrom
) -> None:
    assert read_mail(arg, eight_bit, esmtp=esmtp, limits=LIMITS) == expected


@pytest.mark.parametrize(
    ("arg", "eight_bit", "esmtp", "refusal"),
    [
        ("TO:<a@b.test>", False, True, "syntax 501 5.5.4"),
        ("FROM:a@b.test", False, True, "syntax 501 5.1.7"),
        ("FROM:<a@b.test> SIZE=10", False, False, "syntax 555 5.5.4"),  # HELO: no parameters
        ("FROM:<a@b.test> SIZE=1 SIZE=1", False, True, "syntax 555 5.5.4"),
        ("FROM:<a@b.test> AUTH=<>", False, True, "syntax 555 5.5.4"),
        ("FROM:<a@b.test>SIZE=10", False, True, "syntax 501 5.5.4"),
        ("FROM:<a@b.test> SIZE=26214401", False, True, "message_too_big 552 5.3.4"),
        ("FROM:<j\u00f6@b.test>", True, True, "8bit 553 5.6.7"),
        ("FROM:<" + "x" * 65 + "@b.test>", False, True, "syntax 501 5.1.7"),
        ("FROM:<a@[300.1.1.1]>", False, True, "syntax 501 5.1.7"),
    ],
)
def test_mail_refusals(arg: str, eight_bit: bool, esmtp: bool, refusal: str) -> None:
    assert code(read_mail(arg, eight_bit, esmtp=esmtp, limits=LIMITS)) == refusal


def test_mail_body_8bitmime_only_when_offered() -> None:
    arg = "FROM:<a@b.test> BODY=8BITMIME"
    off = limits(eightbitmime=False)
    assert code(read_mail(arg, False, esmtp=True, limits=off)) == "syntax 555 5.5.4"


def test_rcpt_reads_the_path_and_lower_cases_only_ascii_in_the_domain() -> None:
    def rcpt(arg: str, recipients: int = 0, smtputf8: bool = False) -> object:
        eight_bit = not arg.isascii()
        return read_rcpt(
            arg, eight_bit, esmtp=True, smtputf8=smtputf8, recipients=recipients, limits=LIMITS
        )

    assert rcpt("TO:<Bob@EXAMPLE.Test>") == RcptTo("Bob@EXAMPLE.Test", "example.test")
    assert rcpt("TO:<postmaster>") == RcptTo("Postmaster", "")
    assert rcpt("TO:<a@[IPv6:::1]>") == RcptTo("a@[IPv6:::1]", "[ipv6:::1]")
    kelvin = "TO:<a@\u212aELVIN.test>"  # KELVIN SIGN stays: it is not an ASCII K
    assert rcpt(kelvin, smtputf8=True) == RcptTo("a@\u212aELVIN.test", "\u212aelvin.test")
    assert code(rcpt(kelvin)) == "8bit 553 5.6.7"
    assert code(rcpt("TO:<>")) == "syntax 501 5.1.3"
    assert code(rcpt("TO:<a@b.test> NOTIFY=NEVER")) == "syntax 555 5.5.4"
    assert code(rcpt("TO:<a@b.test>", recipients=100)) == "too_many_recipients 452 4.5.3"
    assert code(rcpt("TO:<a\u2028@b.test>", smtputf8=True)) == "nonprinting 553 5.1.3"


def test_commands_without_an_argument() -> None:
    assert read_bare("DATA", "") == DataStart()
    assert read_bare("RSET", "") == Rset()
    refused = read_bare("DATA", "now")
    assert code(refused) == "syntax 501 5.5.4"
    assert isinstance(refused, Rejected) and refused.reply.text == "Syntax: DATA"
    assert code(read_vrfy("  ")) == "syntax 501 5.5.4"


# ------------------------------------------------------------------- message data
def test_content_comes_line_by_line_and_a_partial_line_waits() -> None:
    data = DataReader(LIMITS)
    buf = bytearray(b"Subject: x\r\n\r\nbo")
    assert data(buf) == DataChunk(b"Subject: x\r\n\r\n")
    assert buf == b"bo"
    assert data(buf) is None
    buf += b"dy\r\n.\r\nQUIT\r\n"
    assert data(buf) == DataEnded(b"body\r\n", 20)
    assert buf == b"QUIT\r\n"  # the next command, pipelined, is left for the command reader


def test_dot_stuffing_is_undone_once() -> None:
    buf = bytearray(b"..a\r\n...\r\nb.\r\n.\r\n")
    assert DataReader(LIMITS)(buf) == DataEnded(b".a\r\n..\r\nb.\r\n", 12)


def test_only_the_real_crlf_dot_crlf_ends_data() -> None:
    """`\\n.\\n` and `\\r\\n.\\n` are not the end (SMTP smuggling): rewritten as CRLF lines
    they stay content (a dot that starts a line after a real CRLF is stuffing, and goes), and
    the message ends at the real end of data."""
    buf = bytearray(b"a\n.\nb\r\n.\nc\r\n.\r\n")
    got = DataReader(limits(bare_line_endings="normalise"))(buf)
    assert got == DataEnded(b"a\r\n.\r\nb\r\n\r\nc\r\n", 14)
    refused = DataReader(LIMITS)(bytearray(b"a\n.\nb\r\n.\r\n"))
    assert refused == DataRefused("bare_eol", R_DATA_BARE_EOL, close=True)


def test_a_refused_message_is_skipped_to_its_end() -> None:
    data = DataReader(LIMITS)
    buf = bytearray(b"a\x00b\r\nmore\r\n")
    assert data(buf) is None  # refused, but only answered at the end of data
    buf += b"still more\r\n.\r\nNOOP\r\n"
    assert data(buf) == DataRefused("nul", R_DATA_NUL)
    assert buf == b"NOOP\r\n"


def test_line_and_message_size_limits() -> None:
    long_line = bytearray(b"x" * 999 + b"\r\n.\r\n")
    refused = DataReader(LIMITS)(long_line)
    assert isinstance(refused, DataRefused) and refused.reason == "line_too_long"
    assert refused.reply.code == 554
    small = DataReader(limits(max_message_size=1024))
    refused = small(bytearray((b"y" * 98 + b"\r\n") * 11 + b".\r\n"))
    assert isinstance(refused, DataRefused) and refused.reason == "message_too_big"
    assert (refused.reply.code, refused.reply.enhanced) == (552, "5.3.4")
    exact = DataReader(limits(max_message_size=1000))
    assert exact(bytearray((b"y" * 98 + b"\r\n") * 10 + b".\r\n")) == DataEnded(
        (b"y" * 98 + b"\r\n") * 10, 1000
    )
