"""The milter codec without a socket: packets cut from any split of the stream, each named
malformed case refused with its reason, and a fuzz test that any input ends in an event or a
MilterError, never another exception or an unbounded buffer."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.limits import MILTER_MAX_PACKET
from mailmoat.milter import codec
from mailmoat.milter.codec import MilterError, PacketReader, decode, packet
from mailmoat.smtp.replies import reply
from tests.support import milter_peer as mta


def events(data: bytes, max_packet: int = MILTER_MAX_PACKET) -> list[codec.Event]:
    reader = PacketReader(max_packet)
    reader.feed(data)
    out = []
    while (found := reader.next_packet()) is not None:
        out.append(decode(*found))
    return out


CONVERSATION = b"".join(
    [
        mta.optneg(),
        mta.macros(b"C", j="mx.example.test", **{"{daemon_name}": ""}),
        mta.connect("192.0.2.1", 41000, "client.example"),
        mta.strings(b"H", "mail.example"),
        mta.strings(b"M", "<a@b.test>", "SIZE=100", "BODY=8BITMIME"),
        mta.strings(b"R", "<c@d.test>"),
        packet(b"T"),
        mta.header("Subject", b" hello\n\tworld"),
        packet(b"N"),
        packet(b"B", b"body\r\n"),
        packet(b"E"),
        packet(b"A"),
        packet(b"A"),
        packet(b"K"),
        packet(b"Q"),
    ]
)


def test_a_conversation_decodes_into_its_events() -> None:
    got = events(CONVERSATION)
    assert got == [
        codec.OptNeg(6, 0x1FF, 0x1FFFFF),
        codec.Macros("C", (("j", "mx.example.test"), ("{daemon_name}", ""))),
        codec.Connect("client.example", "4", 41000, "192.0.2.1"),
        codec.HeloName("mail.example"),
        codec.Mail(("<a@b.test>", "SIZE=100", "BODY=8BITMIME")),
        codec.Rcpt(("<c@d.test>",)),
        codec.Data(),
        codec.Header(b"Subject", b" hello\n\tworld"),
        codec.EndOfHeaders(),
        codec.Body(b"body\r\n"),
        codec.EndOfMessage(b""),
        codec.Abort(),
        codec.Abort(),
        codec.QuitNewConnection(),
        codec.Quit(),
    ]


@given(st.lists(st.integers(min_value=0, max_value=len(CONVERSATION)), max_size=20))
def test_any_split_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    reader = PacketReader(MILTER_MAX_PACKET)
    got = []
    start = 0
    for cut in [*sorted(cuts), len(CONVERSATION)]:
        reader.feed(CONVERSATION[start:cut])
        start = max(start, cut)
        while (found := reader.next_packet()) is not None:
            got.append(decode(*found))
    assert got == events(CONVERSATION)
    assert reader.buffered == 0


def test_other_families_of_connect() -> None:
    assert events(mta.connect("2001:db8::1", 25)) == [
        codec.Connect("client.test", "6", 25, "2001:db8::1")
    ]
    assert events(packet(b"C", b"localhost\0U")) == [codec.Connect("localhost", "U", 0, "")]
    unix = b"localhost\0L" + struct.pack(">H", 0) + b"/run/x.sock\0"
    assert events(packet(b"C", unix)) == [codec.Connect("localhost", "L", 0, "/run/x.sock")]


MALFORMED = {
    "empty packet": (struct.pack(">I", 0), "empty_packet"),
    "oversized length": (struct.pack(">I", MILTER_MAX_PACKET + 1) + b"B", "packet_too_big"),
    "unknown command": (packet(b"Z", b"x"), "unknown_command"),
    "short option negotiation": (packet(b"O", b"\0\0\0\6"), "bad_optneg"),
    "macro packet without a stage": (packet(b"D"), "bad_macro"),
    "macro name without a value": (packet(b"D", b"Cj\0"), "bad_macro"),
    "macro value without its NUL": (packet(b"D", b"Cj\0x"), "unterminated"),
    "connect without a family": (packet(b"C", b"host\0"), "bad_connect"),
    "connect with an unknown family": (packet(b"C", b"host\0X\0\0a\0"), "bad_connect"),
    "connect with data after family U": (packet(b"C", b"host\0Ux"), "bad_connect"),
    "connect with two addresses": (packet(b"C", b"h\x004\0\x19a\0b\0"), "bad_connect"),
    "connect address without its NUL": (packet(b"C", b"h\x004\0\x191.2.3.4"), "unterminated"),
    "helo without its NUL": (packet(b"H", b"name"), "unterminated"),
    "helo with two names": (packet(b"H", b"a\0b\0"), "bad_helo"),
    "mail without an address": (packet(b"M", b"\0"), "bad_mail"),
    "rcpt with nothing": (packet(b"R"), "unterminated"),
    "header without a value": (packet(b"L", b"Subject\0"), "bad_header"),
    "header with an empty name": (packet(b"L", b"\0value\0"), "bad_header"),
    "header with three strings": (packet(b"L", b"a\0b\0c\0"), "bad_header"),
    "end of headers with data": (packet(b"N", b"x"), "bad_eoh"),
    "abort with data": (packet(b"A", b"x"), "bad_abort"),
    "quit with data": (packet(b"Q", b"x"), "bad_quit"),
    "data with data": (packet(b"T", b"x"), "bad_data"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_named_malformed_packets_are_refused(case: str) -> None:
    data, reason = MALFORMED[case]
    with pytest.raises(MilterError) as caught:
        events(data)
    assert caught.value.reason == reason


def test_an_oversized_packet_is_refused_from_its_length_alone() -> None:
    reader = PacketReader(1000)
    reader.feed(struct.pack(">I", 1001))  # none of its data has come yet
    with pytest.raises(MilterError, match="packet_too_big"):
        reader.next_packet()


def test_a_100k_header_packet_fits_the_bound() -> None:
    value = b" " + b"x" * (100 * 1024)
    assert events(mta.header("X-Big", value)) == [codec.Header(b"X-Big", value)]


def test_reply_doubles_percent_and_refuses_a_success_code() -> None:
    answer = codec.encode_reply(reply(550, "5.7.1", "100% refused"))
    assert answer == packet(b"y", b"550 5.7.1 100%% refused\0")
    multi = codec.encode_reply(reply(451, "4.3.0", "one", "two"))
    assert multi == packet(b"y", b"451 4.3.0 one two\0")
    with pytest.raises(ValueError, match="4xx or 5xx"):
        codec.encode_reply(reply(250, "2.0.0", "fine"))


def test_header_edits_use_bare_lf_line_breaks() -> None:
    inserted = codec.encode_insert_header(0, b"A-R", b" x;\r\n\ty")
    assert inserted == packet(b"i", b"\0\0\0\0A-R\0 x;\n\ty\0")
    assert codec.encode_delete_header(2, b"a-r") == packet(b"m", b"\0\0\0\2a-r\0\0")
    with pytest.raises(ValueError, match="NUL"):
        codec.encode_insert_header(0, b"X", b"a\0b")


@settings(max_examples=300)
@given(st.binary(max_size=2000), st.integers(min_value=1, max_value=600))
def test_fuzz_any_bytes_end_in_events_or_a_milter_error(data: bytes, max_packet: int) -> None:
    reader = PacketReader(max_packet)
    reader.feed(data)
    try:
        while (found := reader.next_packet()) is not None:
            command, body = found
            assert len(body) < max_packet
            decode(command, body)
    except MilterError as err:
        assert err.reason
    assert reader.buffered <= len(data)


@given(st.sampled_from(b"ODCHMRLBETNAQKU"), st.binary(max_size=300))
def test_fuzz_every_command_with_any_data(command: int, data: bytes) -> None:
    try:
        decode(bytes([command]), data)
    except MilterError as err:
        assert err.reason


@given(st.lists(st.tuples(st.binary(max_size=12), st.binary(max_size=12)), max_size=8))
def test_macros_decoded_in_one_go_match_each_string_decoded_alone(
    pairs: list[tuple[bytes, bytes]],
) -> None:
    """A macro packet is decoded as one string, then split (the most frequent packet): the
    same pairs as decoding each name and value alone, invalid UTF-8 included."""
    pairs = [(n.replace(b"\0", b""), v.replace(b"\0", b"")) for n, v in pairs]
    data = b"".join(n + b"\0" + v + b"\0" for n, v in pairs)
    ev = decode(b"D", b"M" + data)
    assert isinstance(ev, codec.Macros) and ev.stage == "M"
    text = [(n.decode("utf-8", "replace"), v.decode("utf-8", "replace")) for n, v in pairs]
    assert list(ev.values) == text
