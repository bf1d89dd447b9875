"""The bytes the downstream client writes, as fixed cases where mutation testing (scripts/mutation
over relay/message_writer.py) found only a property test holding them: which envelope
addresses may go between `<...>` (nothing that could end the path, add a parameter or a
command), and the end-of-data indicator after content that does or does not end in CRLF."""

from __future__ import annotations

import pytest

from mailmoat.relay.client_errors import InternalError
from mailmoat.relay.message_writer import DotStuffer, envelope_address


@pytest.mark.parametrize(
    "address",
    [
        "bob@example.net",
        '"a b"@example.net',  # a space inside quotes
        '"a>b<c"@example.net',  # angle brackets inside quotes
        '"a\\"b"@example.net',  # an escaped quote inside quotes
        '"a\\\\"@example.net',  # an escaped backslash just before the closing quote
        "",  # the null sender
    ],
)
def test_addresses_that_cannot_break_out_are_written_as_they_are(address: str) -> None:
    assert envelope_address(address, utf8=False) == address.encode("ascii")


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("bob@example.net>\r\nRCPT TO:<evil@example.org", "outside quotes"),
        ("bob@example.net\r\nRCPT TO:<evil@example.org", "control character"),
        ("bob@example.net\nDATA", "control character"),
        ("bob\x00@example.net", "control character"),
        ("bob\x7f@example.net", "control character"),
        ("bob\x1f@example.net", "control character"),
        ("bob\t@example.net", "control character"),
        ('"bob\r\n"@example.net', "control character"),  # not even inside quotes
        ("bob@example.net> SIZE=1", "outside quotes"),
        ("bob@example.net>", "outside quotes"),
        ("<bob@example.net", "outside quotes"),
        ("bob @example.net", "outside quotes"),
        ('"a b"c d@example.net', "outside quotes"),  # quotes closed before the space
        ('"a b@example.net', "unterminated"),
        ('"a\\"@example.net', "unterminated"),  # the closing quote is escaped
    ],
)
def test_addresses_that_could_break_out_are_refused(address: str, why: str) -> None:
    """A bug upstream must never become a second command or parameter downstream: 451."""
    with pytest.raises(InternalError, match=why) as caught:
        envelope_address(address, utf8=True)
    assert caught.value.reply.code == 451


def test_a_non_ascii_address_needs_smtputf8() -> None:
    assert envelope_address("jörg@example.net", utf8=True) == "jörg@example.net".encode()
    with pytest.raises(InternalError, match="without SMTPUTF8"):
        envelope_address("jörg@example.net", utf8=False)


@pytest.mark.parametrize(
    ("chunks", "end"),
    [
        ([], b".\r\n"),
        ([b"a\r\n"], b".\r\n"),
        ([b"a\r", b"\n"], b".\r\n"),  # the CRLF split over two chunks
        ([b"a\r\n", b"b"], b"\r\n.\r\n"),
        ([b"a", b"\r"], b"\r\n.\r\n"),
        ([b"ab\r\nc", b"d"], b"\r\n.\r\n"),
        ([b"x" * 10, b"\n"], b"\r\n.\r\n"),  # a bare LF is no line end
    ],
)
def test_the_end_of_data_follows_a_crlf_whatever_the_chunks(
    chunks: list[bytes], end: bytes
) -> None:
    s = DotStuffer()
    for chunk in chunks:
        s.feed(chunk)
    assert s.end() == end
