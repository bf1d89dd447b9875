"""The downstream client's reading half, where mutation testing (scripts/mutation over
relay/reply_reader.py) found nothing holding: the start of a reply nobody asked for, in the
same read as the owed ones, breaks the connection (else it would complete later and be taken
for the answer to the next command); a malformed reply is a protocol violation too; the end of
a wait for the write buffer to drain comes with the buffer's resumption or the connection's
loss (and neither breaks when nobody waits); a silent server's reply is waited for no longer
than asked; the server's end of file closes our side too; and `close_transport` closes an
open transport, once."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mailmoat.relay.client_errors import ConnectionLost, ProtocolViolation
from mailmoat.relay.reply_reader import ReplyReader, close_transport


@pytest.mark.parametrize("stray", [b"2", b"250 stray", b"250-more\r\n250 x"])
async def test_the_start_of_a_stray_reply_after_the_owed_one_is_a_violation(stray: bytes) -> None:
    reader = ReplyReader()  # owes the greeting
    reader.data_received(b"220 mx.test ready\r\n" + stray)
    assert isinstance(reader.error, ProtocolViolation) and not reader.replies


async def test_a_reply_split_over_reads_is_taken_once_whole() -> None:
    reader = ReplyReader()
    reader.data_received(b"220 mx.te")
    assert reader.error is None and reader.partial and not reader.replies
    reader.data_received(b"st ready\r\n")
    assert reader.error is None and not reader.partial
    assert (await reader.next_reply(5)).code == 220


async def test_a_lost_connection_ends_a_wait_for_the_write_buffer() -> None:
    reader = ReplyReader()
    reader.pause_writing()
    waiting = asyncio.ensure_future(reader.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.connection_lost(None)
    with pytest.raises(ConnectionLost):
        await asyncio.wait_for(waiting, 10)


async def test_a_malformed_reply_is_a_protocol_violation() -> None:
    reader = ReplyReader()
    reader.data_received(b"hello there\r\n")
    assert isinstance(reader.error, ProtocolViolation)


async def test_a_wait_for_the_write_buffer_ends_when_it_drains() -> None:
    reader = ReplyReader()
    reader.resume_writing()  # nobody waits: nothing to do
    reader.pause_writing()
    waiting = asyncio.ensure_future(reader.drain())
    await asyncio.sleep(0)
    assert not waiting.done()
    reader.resume_writing()
    await asyncio.wait_for(waiting, 10)


async def test_a_lost_connection_with_nobody_waiting_is_only_noted() -> None:
    reader = ReplyReader()
    reader.connection_lost(None)
    assert reader.closed and reader.lost.done()


async def test_close_transport_closes_an_open_transport_once() -> None:
    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        transport, reader = await loop.create_connection(ReplyReader, sock=ours)
        assert not transport.is_closing()
        close_transport(transport)
        assert transport.is_closing()
        close_transport(transport)  # a second call does nothing
        await asyncio.wait_for(reader.lost, 10)  # the connection is gone
        theirs.settimeout(10)
        assert theirs.recv(1) == b""  # and the other end sees the close
    finally:
        theirs.close()


async def test_waiting_for_a_silent_server_times_out() -> None:
    reader = ReplyReader()
    waiting = asyncio.ensure_future(reader.next_reply(0.05))
    # asyncio.wait, not wait_for: wait_for's own TimeoutError would pass for next_reply's
    done, _ = await asyncio.wait({waiting}, timeout=10)
    waiting.cancel()
    assert waiting in done, "next_reply still waiting"
    assert isinstance(waiting.exception(), TimeoutError)


async def test_the_servers_end_of_file_closes_the_connection() -> None:
    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        _, reader = await loop.create_connection(ReplyReader, sock=ours)
        theirs.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(reader.lost, 10)
        assert reader.closed
    finally:
        theirs.close()
