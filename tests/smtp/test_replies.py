"""Reply serialisation and the incremental ReplyParser (mailmoat.smtp.replies)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmoat.smtp.replies import (
    MAX_REPLY_LINE,
    Reply,
    ReplyError,
    ReplyParser,
    clean_text,
    reply,
)

LINE = re.compile(rb"^[2-5]\d\d[ -][\x20-\x7e]*\r\n$")


def lines_of(data: bytes) -> list[bytes]:
    return re.findall(rb".*?\r\n", data, re.S)


# ------------------------------------------------------------------ serialising
@pytest.mark.parametrize(
    ("answer", "wire"),
    [
        (reply(250, None, "Ok"), b"250 Ok\r\n"),
        (reply(250, "2.1.0", "Ok"), b"250 2.1.0 Ok\r\n"),
        (reply(354, None, "Go ahead"), b"354 Go ahead\r\n"),
        (reply(550, "5.1.1", ""), b"550 5.1.1 \r\n"),
        (
            reply(250, None, "mx", "PIPELINING", "SIZE 10"),
            b"250-mx\r\n250-PIPELINING\r\n250 SIZE 10\r\n",
        ),
        (
            reply(451, "4.3.0", "first", "second"),
            b"451-4.3.0 first\r\n451 4.3.0 second\r\n",
        ),
        (reply(421, "4.7.0", "a\r\nb"), b"421 4.7.0 a??b\r\n"),
        (reply(554, "5.7.1", "nul\x00 tab\t del\x7f"), b"554 5.7.1 nul? tab? del?\r\n"),
        (reply(550, "5.1.1", "j\u00f6rg"), b"550 5.1.1 j?rg\r\n"),
        (reply(250, None, "x\r\n250 injected"), b"250 x??250 injected\r\n"),
    ],
    ids=lambda v: v if isinstance(v, bytes) else "",
)
def test_to_bytes(answer, wire):
    assert answer.to_bytes() == wire


def test_long_text_is_cut_to_fit_a_reply_line():
    wire = reply(550, "5.1.1", "x" * 5000).to_bytes()
    assert len(wire) <= MAX_REPLY_LINE
    assert LINE.match(wire)


@pytest.mark.parametrize(
    ("code", "enhanced"),
    [
        (199, None),
        (600, None),
        (0, None),
        (250, "5.0.0"),
        (550, "2.0.0"),
        (354, "3.0.0"),
        (250, "2.0"),
        (250, "2.0.0.0"),
        (250, "2.1000.0"),
        (250, " 2.0.0"),
        (250, "x.0.0"),
    ],
)
def test_invalid_reply(code, enhanced):
    with pytest.raises(ValueError):
        Reply(code, enhanced, ("x",))


def test_reply_needs_a_line():
    with pytest.raises(ValueError):
        Reply(250, None, ())


def test_reply_properties():
    ok, later, no = reply(250, None, "a", "b"), reply(450, "4.2.0", "x"), reply(550, None, "x")
    assert (ok.positive, ok.transient, ok.permanent) == (True, False, False)
    assert (later.positive, later.transient, later.permanent) == (False, True, False)
    assert (no.positive, no.transient, no.permanent) == (False, False, True)
    assert reply(354, None, "go").positive
    assert ok.text == "a b"
    assert str(later) == "450 4.2.0 x"
    assert str(ok) == "250 a b"


def test_clean_text():
    assert clean_text("ok text") == "ok text"
    assert clean_text("\r\n\x00\u00e9") == "????"
    assert clean_text("x" * 10, limit=3) == "xxx"
    assert clean_text("tab\there\x7f") == "tab?here?"


@given(st.text(max_size=50))
def test_clean_text_is_printable_ascii(text):
    out = clean_text(text)
    assert len(out) == min(len(text), 400) and all(0x20 <= ord(c) <= 0x7E for c in out)
    assert all(a == b or b == "?" for a, b in zip(text, out, strict=False))


def test_wire_form_is_made_once_and_is_not_part_of_the_value():
    answer = reply(250, "2.0.0", "Ok")
    wire = answer.to_bytes()
    assert answer.to_bytes() is wire
    fresh = reply(250, "2.0.0", "Ok")
    assert fresh == answer and hash(fresh) == hash(answer)
    assert "wire" not in repr(answer)


_text = st.text(max_size=600)


@given(
    code=st.integers(200, 599),
    enhanced=st.one_of(st.none(), st.tuples(st.integers(0, 999), st.integers(0, 999))),
    lines=st.lists(_text, min_size=1, max_size=5),
)
def test_every_serialised_line_is_well_formed(code, enhanced, lines):
    klass = str(code)[0]
    enh = None if enhanced is None or klass == "3" else f"{klass}.{enhanced[0]}.{enhanced[1]}"
    wire = Reply(code, enh, tuple(lines)).to_bytes()
    parts = lines_of(wire)
    assert b"".join(parts) == wire
    assert len(parts) == len(lines)
    for i, part in enumerate(parts):
        assert LINE.match(part), part
        assert len(part) <= MAX_REPLY_LINE
        assert part[3:4] == (b" " if i == len(parts) - 1 else b"-")


# ---------------------------------------------------------------------- parsing
def test_parse_one():
    assert ReplyParser().feed(b"250 2.1.0 Sender ok\r\n") == [reply(250, "2.1.0", "Sender ok")]


def test_parse_without_enhanced_code():
    assert ReplyParser().feed(b"220 mx.example ESMTP\r\n") == [reply(220, None, "mx.example ESMTP")]


def test_parse_multiline():
    wire = b"250-mx.example\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    assert ReplyParser().feed(wire) == [
        reply(250, None, "mx.example", "PIPELINING", "SIZE 1000", "8BITMIME")
    ]


def test_parse_multiline_enhanced_on_every_line():
    wire = b"550-5.1.1 first\r\n550-5.1.1 second\r\n550 5.1.1 third\r\n"
    assert ReplyParser().feed(wire) == [reply(550, "5.1.1", "first", "second", "third")]


def test_parse_enhanced_only_on_first_line():
    wire = b"550-5.1.1 first\r\n550 second\r\n"
    assert ReplyParser().feed(wire) == [reply(550, "5.1.1", "first", "second")]


def test_enhanced_code_of_another_class_is_text():
    assert ReplyParser().feed(b"250 5.0.0 odd\r\n") == [reply(250, None, "5.0.0 odd")]


def test_bare_code():
    assert ReplyParser().feed(b"250\r\n") == [reply(250, None, "")]


def test_several_replies_in_one_read():
    wire = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 Go\r\n"
    assert ReplyParser().feed(wire) == [
        reply(250, "2.1.0", "Ok"),
        reply(250, "2.1.5", "Ok"),
        reply(354, None, "Go"),
    ]


def test_split_at_every_position():
    wire = b"250-mx.example\r\n250-SIZE 10\r\n250 2.0.0 done\r\n451 4.3.0 later\r\n"
    whole = ReplyParser().feed(wire)
    assert len(whole) == 2
    for cut in range(len(wire) + 1):
        parser = ReplyParser()
        assert parser.feed(wire[:cut]) + parser.feed(wire[cut:]) == whole, cut
    parser = ReplyParser()
    assert [r for i in range(len(wire)) for r in parser.feed(wire[i : i + 1])] == whole


def test_one_line_replies_are_kept_and_shared():
    wire = b"250 2.1.0 Ok\r\n"
    first, again = ReplyParser().feed(wire), ReplyParser().feed(wire)
    assert first == again == [reply(250, "2.1.0", "Ok")] and first[0] is again[0]
    long = b"250 2.0.0 " + b"x" * 200 + b"\r\n"  # too long to keep: parsed the same way
    assert ReplyParser().feed(long) == [reply(250, "2.0.0", "x" * 200)]


def test_malformed_one_line_raises_every_time():
    for _ in range(2):
        with pytest.raises(ReplyError):
            ReplyParser().feed(b"600 out of range\r\n")


def test_unprintable_text_is_cleaned():
    assert ReplyParser().feed(b"550 5.7.1 a\rb\x00c\xffd\r\n") == [reply(550, "5.7.1", "a?b?c?d")]


@pytest.mark.parametrize(
    "wire",
    [
        b"\r\n",
        b"25 short\r\n",
        b"2500 long\r\n",
        b"250ok\r\n",
        b"abc def\r\n",
        b"150 informational\r\n",
        b"600 out of range\r\n",
        b"099 x\r\n",
        b" 250 leading space\r\n",
        b"250_x\r\n",
        b"150\r\n",
        b"250-first\r\n251 other code\r\n",
        b"250-first\r\n550-other code\r\n",
        b"HTTP/1.1 400 Bad Request\r\n",
    ],
)
def test_malformed(wire):
    with pytest.raises(ReplyError):
        ReplyParser().feed(wire)


def test_too_many_lines():
    parser = ReplyParser(max_lines=3)
    assert parser.feed(b"250-a\r\n250-b\r\n250-c\r\n") == []
    with pytest.raises(ReplyError):
        parser.feed(b"250 d\r\n")
    assert ReplyParser(max_lines=3).feed(b"250-a\r\n250-b\r\n250 c\r\n") == [
        reply(250, None, "a", "b", "c")
    ]


def test_default_line_count_bound():
    parser = ReplyParser()
    with pytest.raises(ReplyError):
        for _ in range(1000):
            parser.feed(b"250-x\r\n")


BOUND = ReplyParser.MAX_LINE


def test_long_line_at_the_bound_is_accepted():
    line = b"250 " + b"x" * (BOUND - 6) + b"\r\n"
    assert len(line) == BOUND
    (r,) = ReplyParser().feed(line)
    assert r.code == 250


def test_long_line_over_the_bound_without_crlf():
    parser = ReplyParser()
    parser.feed(b"250 " + b"x" * (BOUND - 4))
    with pytest.raises(ReplyError):
        parser.feed(b"x")


@pytest.mark.parametrize("pieces", [1, 2, 7])
def test_long_line_over_the_bound_whatever_the_reads(pieces):
    """The bound holds for a line that arrives whole as well as one that arrives in pieces."""
    line = b"250 " + b"x" * (BOUND - 5) + b"\r\n"
    assert len(line) == BOUND + 1
    parser = ReplyParser()
    step = -(-len(line) // pieces)
    with pytest.raises(ReplyError):
        for i in range(0, len(line), step):
            parser.feed(line[i : i + step])


def test_endless_line_is_bounded():
    parser = ReplyParser()
    with pytest.raises(ReplyError):
        for _ in range(1000):
            parser.feed(b"x" * 100)


_printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=450)


@given(
    code=st.integers(200, 599),
    enhanced=st.tuples(st.integers(0, 999), st.integers(0, 999)),
    use_enhanced=st.booleans(),
    lines=st.lists(_printable, min_size=1, max_size=5),
    cut=st.integers(0, 5000),
)
def test_round_trip(code, enhanced, use_enhanced, lines, cut):
    klass = str(code)[0]
    enh = f"{klass}.{enhanced[0]}.{enhanced[1]}" if use_enhanced and klass != "3" else None
    if enh is None:
        # Without an enhanced code, text that starts with one would be read back as one.
        lines = ["x" + line for line in lines]
    original = Reply(code, enh, tuple(lines))
    wire = original.to_bytes()
    parser = ReplyParser()
    (parsed,) = parser.feed(wire[:cut]) + parser.feed(wire[cut:])
    assert parsed == Reply(code, enh, tuple(clean_text(line) for line in lines))
    assert parsed.to_bytes() == wire
