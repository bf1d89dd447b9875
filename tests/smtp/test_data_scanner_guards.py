"""Edges of the engine's DATA scanner that mutation testing (scripts/mutation over the data
scanner, then in smtp/connection.py, now smtp/data.py) showed no test held: the buffer bound
for a line that never ends, a maximal line cut just before its LF, an empty last line arriving
with the end of data, and the next command kept in order after a refused message."""

from __future__ import annotations

import pytest

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.connection import ServerConnection
from mailmoat.smtp.events import DataChunk, Event, MailFrom, MessageAborted, MessageEnd, RcptTo
from tests.smtp.test_connection import DATA, EHLO, MAIL, RCPT, TOO_BIG, drain, session


@pytest.mark.parametrize("piece", [1, 100, 700, 4096])
def test_a_line_that_never_ends_keeps_the_buffer_bounded(piece: int) -> None:
    """Invariant 3: 200 kB without a line feed in DATA is dropped as it comes (line too long),
    never held, whatever the size of the reads; the reply comes at the real end of data."""
    conn = ServerConnection(engine_limits(SmtpSettings()), "mx.test")
    events: list[Event] = []
    conn.greeting()
    for line in (EHLO, MAIL, RCPT, DATA):
        conn.receive_data(line)
        drain(conn, events, None)
    most = 0
    for _ in range(200_000 // piece):
        conn.receive_data(b"x" * piece)
        drain(conn, events, None)
        most = max(most, conn.buffered)
    assert most <= 1000 + piece, most
    conn.receive_data(b"\r\n.\r\n")
    drain(conn, events, None)
    assert [e for e in events if isinstance(e, MessageAborted)] == [MessageAborted("line_too_long")]
    assert not [e for e in events if isinstance(e, MessageEnd)]


@pytest.mark.parametrize("cut", [b"\r", b""])
def test_a_maximal_line_cut_before_its_line_feed_is_taken(cut: bytes) -> None:
    """998 octets and CRLF is the longest line (RFC 5321 4.5.3.1.6), also when a read ends
    between its last octet or its CR and its LF."""
    line = b"x" * 998
    rest = (b"\r" if not cut else b"") + b"\n.\r\n"
    run = session([EHLO, MAIL, RCPT, DATA, line + cut, rest])
    assert run.codes[-1] == "250 2.0.0", run.codes
    assert run.content == line + b"\r\n"
    one_more = session([EHLO, MAIL, RCPT, DATA, b"x" + line + cut, rest])
    assert one_more.codes[-1] == "554 5.6.0", one_more.codes


def test_an_empty_last_line_arriving_with_the_end_of_data() -> None:
    """The last read is CRLF.CRLF right after a line end: an empty line, then the end."""
    run = session(
        [EHLO, MAIL, RCPT, DATA, b"Subject: s\r\n\r\nbody\r\n", b"\r\n.\r\n", b"NOOP\r\n"]
    )
    assert [type(e).__name__ for e in run.events[-3:]] == ["DataChunk", "MessageEnd", "Noop"]
    assert run.content == b"Subject: s\r\n\r\nbody\r\n\r\n"
    assert run.codes[-2:] == ["250 2.0.0", "250 2.0.0"]


@pytest.mark.parametrize(
    ("body", "limits", "refusal"),
    [
        (b"x" * 1500 + b"\r\n", {}, "554 5.6.0"),  # line too long
        (b"y" * 900 + b"\r\n" + b"z" * 900 + b"\r\n", {"max_message_size": 1024}, TOO_BIG),
        (b"a\x00b\r\n", {}, "554 5.6.0"),  # NUL
        # dot-stuffed lines go line by line: the size check of that path
        ((b"..y" + b"y" * 900 + b"\r\n") * 2, {"max_message_size": 1024}, TOO_BIG),
    ],
    ids=["line_too_long", "message_too_big", "nul", "message_too_big_stuffed"],
)
def test_the_next_command_after_a_refused_message_stays_in_order(
    body: bytes, limits: dict[str, int], refusal: str
) -> None:
    """A refused message is skipped up to the real end of data; a command that the same read
    started right after it (its line not complete yet) is read intact when its end comes."""
    run = session([EHLO, MAIL, RCPT, DATA, body + b".\r\nNO", b"OP\r\n"], **limits)
    assert run.codes[-2][:3] == refusal[:3], run.codes
    assert run.types[-1] == "Noop", run.types
    assert run.codes[-1] == "250 2.0.0"
    assert not [e for e in run.events if isinstance(e, DataChunk) and b"NO" in e.data]


@pytest.mark.parametrize(
    ("chunks", "content"),
    [
        # a dot-stuffed line, plain lines to the end of the read, then the end
        ([b"..a\r\nb\r\nc\r\n", b".\r\n"], b".a\r\nb\r\nc\r\n"),
        # stuffed lines after plain lines after a stuffed line, all in one read
        ([b"..a\r\nb\r\nxx\r\n..c\r\n.\r\n"], b".a\r\nb\r\nxx\r\n.c\r\n"),
        ([b"x\r\n..a\r\nbb\r\nccc\r\n..d\r\ne\r\n.\r\n"], b"x\r\n.a\r\nbb\r\nccc\r\n.d\r\ne\r\n"),
    ],
)
def test_dot_stuffing_is_undone_wherever_a_read_cuts(chunks: list[bytes], content: bytes) -> None:
    """Every line that starts with a dot loses exactly that dot, once, whether it comes first
    in a read or after plain lines (the scanner copies runs of plain lines whole)."""
    for feed in (chunks, [b"".join(chunks)]):
        run = session([EHLO, MAIL, RCPT, DATA, *feed])
        assert run.codes[-1] == "250 2.0.0", run.codes
        assert run.content == content, feed


def test_commands_after_the_end_of_data_in_the_same_read_stay_in_order() -> None:
    """A pipelining client's next transaction follows the end of data in one read, its RCPT
    cut in two: each command is read intact."""
    run = session(
        [
            EHLO,
            MAIL,
            RCPT,
            DATA,
            b"body\r\n.\r\nMAIL FROM:<a@b.test>\r\nRC",
            b"PT TO:<x@y.test>\r\n",
        ]
    )
    assert run.types[-3:] == ["MessageEnd", "MailFrom", "RcptTo"], run.types
    assert run.codes[-3:] == ["250 2.0.0", "250 2.1.0", "250 2.1.5"]
    assert run.of(RcptTo)[-1].address == "x@y.test"


def test_a_stuffed_line_with_a_bare_cr_loses_only_its_dot_when_normalised() -> None:
    run = session([EHLO, MAIL, RCPT, DATA, b"..a\rb\r\n.\r\n"], bare_line_endings="normalise")
    assert run.codes[-1] == "250 2.0.0", run.codes
    assert run.content == b".a\r\nb\r\n"


@pytest.mark.parametrize("line", [b"abcdef\r\n", b"..xyzuv\r\n"], ids=["plain", "stuffed"])
def test_a_message_of_exactly_max_message_size_is_taken(line: bytes) -> None:
    """1024 content octets with max_message_size 1024: taken; one line more: 552. Plain lines
    go through the run copier, dot-stuffed ones line by line: both count the same."""
    content_line = line[1:] if line.startswith(b".") else line
    count = 1024 // len(content_line)
    assert count * len(content_line) == 1024
    exact = session([EHLO, MAIL, RCPT, DATA, line * count + b".\r\n"], max_message_size=1024)
    assert exact.codes[-1] == "250 2.0.0", exact.codes
    assert len(exact.content) == 1024
    over = session([EHLO, MAIL, RCPT, DATA, line * (count + 1) + b".\r\n"], max_message_size=1024)
    assert over.codes[-1] == TOO_BIG, over.codes


def test_only_a_leading_dot_is_unstuffed_when_normalised() -> None:
    """A dot after a bare CR starts no line of the client's: it is content, kept."""
    run = session([EHLO, MAIL, RCPT, DATA, b"a\r.b\r\n.\r\n"], bare_line_endings="normalise")
    assert run.codes[-1] == "250 2.0.0", run.codes
    assert run.content == b"a\r\n.b\r\n"


@pytest.mark.parametrize("first", [b"-", b" ", b"!", b"x"])
def test_only_a_dot_line_gets_the_extra_octet(first: bytes) -> None:
    """The stuffed dot is not counted (RFC 5321 4.5.3.1.6); any other first character is."""
    line = first + b"y" * 998 + b"\r\n"  # 1001 octets on the wire
    run = session([EHLO, MAIL, RCPT, DATA, line + b".\r\n"])
    assert run.codes[-1] == "554 5.6.0", run.codes
    stuffed = session([EHLO, MAIL, RCPT, DATA, b"." + line[1:] + b".\r\n"])
    assert stuffed.codes[-1] == "250 2.0.0", stuffed.codes


def test_skipping_a_refused_message_finds_only_the_real_end() -> None:
    """While a refused message is skipped, reads that end in ".<CR><LF>" plus one octet must
    not make a fake end of data: otherwise the rest of the message runs as commands."""
    chunks = [b"a\x00b\r\n", b"text ab.\r\nM", b"AIL FROM:<evil@x.test>\r\n", b"more\r\n.\r\n"]
    run = session([EHLO, MAIL, RCPT, DATA, *chunks])
    assert [e.address for e in run.of(MailFrom)] == ["alice@example.org"], run.types
    assert run.of(MessageAborted) == [MessageAborted("nul")]
    assert run.codes[-1] == "554 5.6.0", run.codes
