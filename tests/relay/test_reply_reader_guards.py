"""The downstream client's reading half, where mutation testing (scripts/mutation over
relay/reply_reader.py) found nothing holding: the start of a reply nobody asked for, in the
same read as the owed ones, breaks the connection (else it would complete later and be taken
for the answer to the next command), and a lost connection ends a wait for the write buffer
to drain instead of leaving it hanging."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat.relay.client_errors import ConnectionLost, ProtocolViolation
from mailmoat.relay.reply_reader import ReplyReader


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
