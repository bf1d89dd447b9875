"""The transport-facing half of the downstream client: every byte the server sends goes through
a bounded `ReplyParser`; a reply nobody asked for breaks the connection. Also closing and
aborting a transport safely on CPython 3.11.2."""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import cast

from mailmoat import logs
from mailmoat.relay.client_errors import ConnectionLost, DownstreamError, ProtocolViolation
from mailmoat.smtp.replies import Reply, ReplyError, ReplyParser


class ReplyReader(asyncio.Protocol):
    """Feeds every byte received into a bounded `ReplyParser`; queues the replies.

    The server speaks only when spoken to: a byte that arrives when no reply is owed (while the
    connection is idle in the pool, after 354 before the final dot was written, beyond the
    replies to the commands sent) is a protocol violation, and the connection is dropped. A
    stray reply must never be taken for the answer to a later command."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.parser = ReplyParser()
        self.replies: collections.deque[Reply] = collections.deque()
        self.owed = 1
        """Replies the server owes: the greeting from the start (it may arrive in the same
        loop turn as the connection, before `create_connection` returns: with uvloop it
        does), then one per command written, not received yet."""
        self.error: DownstreamError | None = None
        self.closed = False
        self.partial = False
        """True while bytes of an unfinished reply line are buffered in the parser."""
        self._tail = b"\r\n"
        self._waiter: asyncio.Future[None] | None = None
        self._timed_out = False
        self._drain: asyncio.Future[None] | None = None
        self.paused = False
        """The transport's write buffer is above its high-water mark."""
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.answered = ""
        """The queue id and verdict of the last message this connection's server answered,
        until the next transaction starts: a reply that comes after that verdict means the
        server answered before it had the whole message, and the verdict may have been
        wrong (logged loudly; the client already has it)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.error is not None:
            return
        if self.owed <= 0:
            if self.answered:
                logs.event(
                    "downstream replied after its verdict",
                    logging.ERROR,
                    message=self.answered,
                    reply=data[:120].decode("ascii", "replace"),
                    detail="the server answered the end of data before it had the message;"
                    " this message may be lost: check the downstream's log",
                )
            self._fail(ProtocolViolation(f"unsolicited data from the server: {data[:60]!r}"))
            return
        try:
            replies = self.parser.feed(data)
        except ReplyError as err:
            self._fail(ProtocolViolation(f"malformed reply: {err}"))
            return
        self._tail = (self._tail + data)[-2:]
        self.partial = self._tail != b"\r\n"
        if len(replies) > self.owed or (len(replies) == self.owed and self.partial):
            self._fail(ProtocolViolation("server sent more replies than commands"))
            return
        self.owed -= len(replies)
        self.replies.extend(replies)
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.lost.done():
            self.lost.set_result(None)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self._wake()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def _fail(self, error: DownstreamError) -> None:
        self.error = error
        if self.transport is not None:
            abort_transport(self.transport)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _time_out(self) -> None:
        self._timed_out = True
        self._wake()

    async def next_reply(self, timeout: float) -> Reply:
        """The next reply; TimeoutError if none is complete within `timeout` seconds.

        One timer per wait, and none when the reply is already here (the rest of a pipelined
        group's replies usually is): cheaper than an `asyncio.timeout` scope per reply."""
        if self.replies:
            return self.replies.popleft()
        loop = asyncio.get_running_loop()
        timer = loop.call_later(timeout, self._time_out)
        try:
            while not self.replies:
                if self.error is not None:
                    raise self.error
                if self.closed:
                    raise ConnectionLost("connection closed by downstream")
                if self._timed_out:
                    raise TimeoutError
                self._waiter = loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        finally:
            timer.cancel()
            self._timed_out = False
        return self.replies.popleft()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        while self.paused and not self.closed:
            self._drain = asyncio.get_running_loop().create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self.error is not None:
            raise self.error
        if self.closed:
            raise ConnectionLost("connection closed by downstream while writing")


# --- closing a transport -----------------------------------------------------------------------


def close_transport(transport: asyncio.BaseTransport) -> None:
    """Start an orderly close, unless one is under way or the connection is already gone.

    Never close() twice: on CPython 3.11.2 (Debian 12) a second close() of an SSL transport, or a
    close() after its connection was lost, detaches the transport from its SSL protocol, and every
    later abort() of it raises AttributeError."""
    if not transport.is_closing():
        transport.close()


def abort_transport(transport: asyncio.Transport) -> None:
    """Drop the connection at once; a no-op for a transport that has nothing left to drop.

    CPython 3.11.2's SSL transport raises AttributeError from abort() once its SSL protocol is
    detached (fixed in 3.11.3); that happens only to a transport already closed, so there is
    nothing left to abort then."""
    try:
        transport.abort()
    except AttributeError:
        if not transport.is_closing():
            raise
