"""The policy protocol codec: requests out of bytes, bounds, and every malformed case named."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.limits import POLICY_MAX_ATTRIBUTES, POLICY_MAX_LINE, POLICY_MAX_REQUEST
from mailmoat.postfix_policy.codec import (
    PolicyLimits,
    PolicyProtocolError,
    RequestReader,
    encode_action,
)

REQUEST = (
    b"request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n"
    b"client_address=192.0.2.7\nclient_port=40000\nhelo_name=client.test\n"
    b"sender=a@sender.test\nrecipient=bob@example.test\ninstance=1a.2b.3\n\n"
)


def test_one_request() -> None:
    [request] = RequestReader().feed(REQUEST)
    assert request["protocol_state"] == "RCPT"
    assert request["recipient"] == "bob@example.test"
    assert request["client_address"] == "192.0.2.7"
    assert len(request) == 9


def test_requests_in_any_pieces_and_many_per_connection() -> None:
    stream = REQUEST * 3
    for size in (1, 2, 7, 64, len(stream)):
        reader = RequestReader()
        got = []
        for i in range(0, len(stream), size):
            got += reader.feed(stream[i : i + size])
        assert len(got) == 3 and not reader.pending
        assert got[0] == got[2]


def test_pending_until_the_empty_line() -> None:
    reader = RequestReader()
    assert reader.feed(REQUEST[:-1]) == []
    assert reader.pending
    assert len(reader.feed(b"\n")) == 1
    assert not reader.pending


def test_crlf_lines_and_empty_values() -> None:
    [request] = RequestReader().feed(b"request=smtpd_access_policy\r\nsender=\r\n\r\n")
    assert request == {"request": "smtpd_access_policy", "sender": ""}


def test_value_with_equals_sign_and_utf8() -> None:
    [request] = RequestReader().feed("a=b=c\nrecipient=jörg@example.test\n\n".encode())
    assert request == {"a": "b=c", "recipient": "jörg@example.test"}


def test_invalid_utf8_is_kept_readable() -> None:
    [request] = RequestReader().feed(b"helo_name=\xff\xfe\n\n")
    assert request["helo_name"] == "\ufffd\ufffd"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"no equals sign\n\n", "malformed_line"),
        (b"=value\n\n", "malformed_line"),
        (b"bad name=x\n\n", "malformed_line"),
        (b"a=1\x00\n\n", "malformed_line"),
        (b"a=1\rb=2\n\n", "malformed_line"),
        (b"a=1\na=2\n\n", "duplicate_attribute"),
        (b"\n", "empty_request"),
        (b"a=" + b"x" * POLICY_MAX_LINE + b"\n\n", "line_too_long"),
        (b"a=" + b"x" * POLICY_MAX_LINE, "line_too_long"),  # no newline ever comes
        (
            b"".join(b"a%d=1\n" % i for i in range(POLICY_MAX_ATTRIBUTES + 1)) + b"\n",
            "too_many_attributes",
        ),
    ],
)
def test_malformed_input_is_named(data: bytes, reason: str) -> None:
    reader = RequestReader()
    with pytest.raises(PolicyProtocolError) as err:
        reader.feed(data)
    assert err.value.reason == reason


def test_request_size_is_bounded_across_lines() -> None:
    line = b"v%d=" + b"x" * (POLICY_MAX_LINE - 20) + b"\n"
    lines = POLICY_MAX_REQUEST // (POLICY_MAX_LINE - 16) + 1
    assert lines < POLICY_MAX_ATTRIBUTES
    data = b"".join(line % i for i in range(lines))
    with pytest.raises(PolicyProtocolError) as err:
        RequestReader().feed(data)
    assert err.value.reason == "request_too_large"


def test_a_line_of_exactly_the_limit_is_taken() -> None:
    line = b"a=" + b"x" * (POLICY_MAX_LINE - 3) + b"\n"
    assert len(line) == POLICY_MAX_LINE
    assert len(RequestReader().feed(line + b"\n")) == 1


def test_broken_reader_stays_broken() -> None:
    reader = RequestReader()
    with pytest.raises(PolicyProtocolError):
        reader.feed(b"junk\n")
    with pytest.raises(PolicyProtocolError):
        reader.feed(REQUEST)


def test_encode_action() -> None:
    assert encode_action("DUNNO") == b"action=DUNNO\n\n"
    assert encode_action("550 5.1.1 no such user") == b"action=550 5.1.1 no such user\n\n"
    for bad in ("", "DUNNO\n", "x\x00", "jörg", "a" * 501):
        with pytest.raises(ValueError):
            encode_action(bad)


SMALL = PolicyLimits(max_line=64, max_attributes=5, max_request=200)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=12))
def test_fuzz_never_more_than_the_bounds(chunks: list[bytes]) -> None:
    """Any bytes, in any pieces: requests within the bounds, or PolicyProtocolError; the
    buffer never holds more than a request."""
    reader = RequestReader(SMALL)
    try:
        for chunk in chunks:
            for request in reader.feed(chunk):
                assert 0 < len(request) <= SMALL.max_attributes
                assert sum(len(k) + len(v) + 2 for k, v in request.items()) <= SMALL.max_request
            assert len(reader._buffer) < SMALL.max_request
    except PolicyProtocolError as err:
        assert err.reason


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.from_regex(r"[a-z_]{1,20}", fullmatch=True),
            st.text(
                st.characters(blacklist_characters="\n\r\x00", blacklist_categories=("Cs",)),
                max_size=30,
            ),
            min_size=1,
            max_size=5,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_fuzz_round_trip(requests: list[dict[str, str]], size: int) -> None:
    """Well-formed requests come back as they were sent, whatever the pieces."""
    stream = b"".join(
        b"".join(f"{k}={v}\n".encode() for k, v in r.items()) + b"\n" for r in requests
    )
    reader = RequestReader()
    got = []
    for i in range(0, len(stream), size):
        got += reader.feed(stream[i : i + size])
    assert got == requests
