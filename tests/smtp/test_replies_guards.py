"""Edges of `Reply` and `ReplyParser` that mutation testing (scripts/mutation over
smtp/replies.py) found no fixed test holding: a downstream reply line shorter than a code is a
`ReplyError` (not a ValueError the client does not catch), an enhanced code of a lower class
than the reply is text, the tolerance for reply lines over 512 octets, and the code range."""

from __future__ import annotations

import pytest

from mailmoat.smtp.replies import (
    Reply,
    ReplyError,
    ReplyParser,
    clean_text,
    reply,
)


@pytest.mark.parametrize("wire", [b"25\r\n", b"2\r\n", b"55\r\n", b"250-a\r\n25\r\n"])
def test_a_line_shorter_than_a_code_is_a_reply_error(wire: bytes) -> None:
    """The downstream client turns a ReplyError into a protocol violation (451); anything else
    would escape its `data_received`."""
    with pytest.raises(ReplyError):
        ReplyParser().feed(wire)


@pytest.mark.parametrize(
    ("wire", "parsed"),
    [
        (b"550 2.0.0 odd\r\n", reply(550, None, "2.0.0 odd")),
        (b"450 2.1.0 odd\r\n", reply(450, None, "2.1.0 odd")),
        (b"550-4.0.0 first\r\n550 second\r\n", reply(550, None, "4.0.0 first", "second")),
    ],
)
def test_an_enhanced_code_of_a_lower_class_is_text(wire: bytes, parsed: Reply) -> None:
    assert ReplyParser().feed(wire) == [parsed]


@pytest.mark.parametrize("length", [513, 1000, 2048])
def test_reply_lines_up_to_four_times_512_octets_are_taken(length: int) -> None:
    """Tolerance for servers that overrun RFC 5321's 512 octets (a long 5xx text, say): up to
    2048 octets, CRLF included."""
    line = b"550 " + b"x" * (length - 6) + b"\r\n"
    assert len(line) == length
    for feed in ([line], [line[:300], line[300:]]):
        parser = ReplyParser()
        got = [r for piece in feed for r in parser.feed(piece)]
        assert [(r.code, len(r.text)) for r in got] == [(550, min(length - 6, 400))]


def test_a_reply_line_over_four_times_512_octets_is_refused() -> None:
    line = b"550 " + b"x" * 2043 + b"\r\n"
    assert len(line) == 2049
    with pytest.raises(ReplyError):
        ReplyParser().feed(line)


@pytest.mark.parametrize("code", [200, 599])
def test_the_code_range_is_200_to_599_inclusive(code: int) -> None:
    assert reply(code, None, "x").code == code
    assert ReplyParser().feed(b"%d x\r\n" % code) == [reply(code, None, "x")]


@pytest.mark.parametrize("code", [199, 600])
def test_a_code_outside_200_to_599_is_refused(code: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        reply(code, None, "x")


@pytest.mark.parametrize(("code", "enhanced"), [(200, "5.0.0"), (250, "4.0.0"), (599, "2.0.0")])
def test_an_enhanced_code_that_does_not_fit_is_named_as_such(code: int, enhanced: str) -> None:
    """The error says what is wrong (for the log of whoever built the reply)."""
    with pytest.raises(ValueError, match="does not fit"):
        reply(code, enhanced, "x")


def test_a_reply_of_100_lines_is_taken_and_one_of_101_refused() -> None:
    """The default bound on the lines of one reply (a long EHLO answer is a few dozen)."""
    assert ReplyParser().feed(b"250-x\r\n" * 99 + b"250 y\r\n")[0].lines[-1] == "y"
    with pytest.raises(ReplyError):
        ReplyParser().feed(b"250-x\r\n" * 100 + b"250 y\r\n")


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (200, "positive"),
        (399, "positive"),
        (400, "transient"),
        (499, "transient"),
        (500, "permanent"),
        (599, "permanent"),
    ],
)
def test_each_code_is_of_exactly_one_kind_up_to_the_edges(code: int, kind: str) -> None:
    """What the client is told and whether a message is kept follow these three."""
    r = reply(code, None, "x")
    assert {k for k in ("positive", "transient", "permanent") if getattr(r, k)} == {kind}


@pytest.mark.parametrize("text", ["x" * 401, "é" * 401, "x" * 5000])
def test_reply_text_is_cut_at_400_characters(text: str) -> None:
    assert len(clean_text(text)) == 400
    assert (
        reply(550, "5.1.1", text).to_bytes() == b"550 5.1.1 " + clean_text(text).encode() + b"\r\n"
    )


@pytest.mark.parametrize(
    ("wire", "parsed"),
    [
        (b"550-5.1.1 first\r\n550 5.0.0 second\r\n", reply(550, "5.1.1", "first", "5.0.0 second")),
        (b"550-5.1.1 first\r\n550 5.1.1 second\r\n", reply(550, "5.1.1", "first", "second")),
        (b"550-5.1.1 first\r\n550 5.9.9 second\r\n", reply(550, "5.1.1", "first", "5.9.9 second")),
    ],
)
def test_only_the_first_lines_enhanced_code_is_taken_off_the_others(
    wire: bytes, parsed: Reply
) -> None:
    assert ReplyParser().feed(wire) == [parsed]


@pytest.mark.parametrize(
    "wire", [b"550-first\r\n250 other\r\n", b"251-first\r\n250 other\r\n", b"550-a\r\n549 b\r\n"]
)
def test_a_multiline_reply_whose_code_drops_is_malformed(wire: bytes) -> None:
    """A reply whose later line has a lower code (a 550 that ends as a 250) is no reply."""
    with pytest.raises(ReplyError, match="code changed"):
        ReplyParser().feed(wire)
