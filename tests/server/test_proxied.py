"""Reading the PROXY header off a socket: the header and not one octet more, whatever arrives,
in one piece or several; anything else is the reader's one error."""

from __future__ import annotations

import asyncio
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.server.proxied import ProxyReadError, read_header
from mailmoat.server.proxy_header import V2_SIGNATURE, ProxyHeaderError, header_length

HEADERS = [
    b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n",
    b"PROXY UNKNOWN\r\n",
    V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes(range(12)),
    V2_SIGNATURE + b"\x20\x00\x00\x00",
]


async def _read(chunks: list[bytes]) -> tuple[object, bytes]:
    """Send `chunks` (a pause between them), close; the reader's result or error, and what it
    left in the socket."""
    ours, theirs = socket.socketpair()
    with ours, theirs:

        async def feed() -> None:
            for chunk in chunks:
                theirs.sendall(chunk)
                await asyncio.sleep(0.001)
            theirs.shutdown(socket.SHUT_WR)

        feeder = asyncio.ensure_future(feed())
        try:
            result: object = await read_header(ours, 5.0)
        except ProxyReadError as err:
            result = err
        await feeder
        ours.setblocking(True)
        ours.settimeout(5)
        rest = b""
        while chunk := ours.recv(65536):
            rest += chunk
        return result, rest


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(HEADERS) | st.binary(max_size=120),
    st.binary(max_size=40),
    st.lists(st.integers(1, 30), max_size=6),
)
def test_the_header_is_read_and_not_one_octet_more(
    head: bytes, after: bytes, cuts: list[int]
) -> None:
    data = head + after
    chunks, at = [], 0
    for n in cuts:
        chunks.append(data[at : at + n])
        at += n
    chunks = [c for c in [*chunks, data[at:]] if c]
    result, rest = asyncio.run(_read(chunks))
    try:
        n = header_length(data)
    except ProxyHeaderError:
        n = -1
    assert data.endswith(rest)  # whatever happened, only a prefix was consumed
    if isinstance(result, ProxyReadError):
        # refused: malformed, or the input ended before the header did
        assert n == -1 or n is None or n > len(data) or rest == data[n:]
    else:
        assert n is not None and n > 0 and rest == data[n:]


@pytest.mark.parametrize("header", HEADERS)
def test_a_header_arriving_an_octet_at_a_time(header: bytes) -> None:
    result, rest = asyncio.run(_read([bytes([b]) for b in header] + [b"EHLO x\r\n"]))
    assert not isinstance(result, ProxyReadError), result
    assert rest == b"EHLO x\r\n"


def test_silence_ends_at_the_deadline() -> None:
    async def silent() -> ProxyReadError:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            with pytest.raises(ProxyReadError) as caught:
                await read_header(ours, 0.2)
            return caught.value

    assert "within 0.2 s" in str(asyncio.run(silent()))
