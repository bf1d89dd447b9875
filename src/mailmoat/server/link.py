"""The channel between the supervisor and one worker process.

A `SOCK_SEQPACKET` socket pair: every packet is one message, a tuple of plain values whose
first item names it, in `marshal`'s format (both ends are mailmoat processes of one Python,
and marshal costs a fraction of JSON), and a packet may carry one file descriptor (an
accepted client connection). Packets keep their boundaries, so there is no framing to get
wrong, and the kernel bounds what is in flight. Either side can also ask the other something
(`request`) and get one answer back.

Nothing here blocks: sends are non-blocking, and a message that does not fit into the socket
buffer now waits in a short queue (`MAX_QUEUED`); a connection handed over with its descriptor
is never queued (`send_fd` says False and the supervisor tries elsewhere).

Requests: `snapshot` (supervisor -> worker: its counters), `store` (worker -> supervisor: one
store operation), `reload` (supervisor -> worker: the validated settings as JSON octets; the
answer is "ok", or the error that kept the worker on its old settings).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import inspect
import logging
import marshal
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

from mailmoat import logs

MAX_MESSAGE = 64 * 1024
"""Largest message in octets (a stats snapshot is the largest, a few KiB)."""

MAX_QUEUED = 10_000
"""Messages that may wait for room in the socket buffer; past that the link is broken."""

MAX_PENDING = 10_000
"""Requests waiting for their answer at once; more fail at once (invariant 3)."""

READS_PER_TURN = 64
"""Packets read per turn of the event loop, so one busy link cannot starve the others."""

_FDS = socket.CMSG_SPACE(array.array("i", [0]).itemsize)

Handler = Callable[[tuple[Any, ...], socket.socket | None], None]
Server = Callable[[str, tuple[Any, ...]], Any]


class LinkError(Exception):
    """The other side is gone, did not answer in time, or answered with an error."""


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(supervisor's end, worker's end); the worker's end is inheritable by a child."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    theirs.set_inheritable(True)
    return ours, theirs


class Link:
    """One end of a supervisor-worker channel.

    `on_message(message, sock)` gets every message that is not a request or an answer (`sock`
    is the descriptor it carried, as a socket, or None); `serve(name, args)` answers requests
    (a value, or an awaitable of one); `on_closed()` runs once when the other side is gone.
    """

    def __init__(
        self,
        sock: socket.socket,
        on_message: Handler,
        serve: Server | None = None,
        on_closed: Callable[[], None] | None = None,
    ) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.closed = False
        self._on_message = on_message
        self._serve = serve
        self._on_closed = on_closed
        self._queue: deque[bytes] = deque()
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._readable)

    # ---------------------------------------------------------------- sending
    def send(self, *message: Any) -> bool:
        """Send one message; False when the link is closed or hopelessly backed up."""
        if self.closed:
            return False
        data = marshal.dumps(message)
        if len(data) > MAX_MESSAGE:
            raise ValueError(f"link message too large: {len(data)} octets")
        if self._queue:
            return self._enqueue(data)
        try:
            self.sock.send(data)
        except BlockingIOError:
            return self._enqueue(data)
        except OSError:
            self.close()
            return False
        return True

    def send_fd(self, fd: int, *message: Any) -> bool:
        """Send one message with a file descriptor, now or not at all."""
        if self.closed or self._queue:
            return False
        data = marshal.dumps(message)
        try:
            self.sock.sendmsg(
                [data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
            )
        except BlockingIOError:
            return False
        except OSError:
            self.close()
            return False
        return True

    def _enqueue(self, data: bytes) -> bool:
        if len(self._queue) >= MAX_QUEUED:
            logs.event("link_overflow", logging.WARNING, queued=len(self._queue))
            self.close()
            return False
        if not self._queue:
            self._loop.add_writer(self.sock.fileno(), self._writable)
        self._queue.append(data)
        return True

    def _writable(self) -> None:
        queue = self._queue
        while queue:
            try:
                self.sock.send(queue[0])
            except BlockingIOError:
                return
            except OSError:
                self.close()
                return
            queue.popleft()
        self._loop.remove_writer(self.sock.fileno())

    async def request(self, name: str, *args: Any, timeout: float = 5.0) -> Any:
        """Ask the other side; its answer, or LinkError."""
        if self.closed:
            raise LinkError("link closed")
        if len(self._pending) >= MAX_PENDING:
            raise LinkError("too many requests in flight")
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._pending[rid] = fut
        try:
            if not self.send("req", rid, name, list(args)):
                raise LinkError("link closed")
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise LinkError(f"no answer to {name} in {timeout:g} s") from None
        finally:
            self._pending.pop(rid, None)

    # -------------------------------------------------------------- receiving
    def _readable(self) -> None:
        for _ in range(READS_PER_TURN):
            try:
                data, ancdata, flags, _ = self.sock.recvmsg(MAX_MESSAGE, _FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            sock = _received_socket(ancdata)
            if not data and sock is None:
                self.close()  # the other side closed its end
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                if sock is not None:
                    sock.close()
                logs.event("link_truncated", logging.WARNING, size=len(data))
                continue
            try:
                message = marshal.loads(data)
                self._dispatch(message, sock)
            except Exception:
                if sock is not None:
                    sock.close()
                logs.log.exception("bad link message")

    def _dispatch(self, message: tuple[Any, ...], sock: socket.socket | None) -> None:
        kind = message[0]
        if kind == "res":
            _, rid, ok, value = message
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(LinkError(str(value)))
        elif kind == "req":
            _, rid, name, args = message
            self._answer(rid, name, args)
        else:
            self._on_message(message, sock)

    def _answer(self, rid: int, name: str, args: tuple[Any, ...]) -> None:
        if self._serve is None:
            self.send("res", rid, False, "no requests served here")
            return
        try:
            result = self._serve(name, args)
        except Exception as err:
            self.send("res", rid, False, repr(err))
            return
        if not inspect.isawaitable(result):
            self.send("res", rid, True, result)
            return
        task = asyncio.ensure_future(result)
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._answered(rid, t))

    def _answered(self, rid: int, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:
            self.send("res", rid, False, repr(err))
        else:
            self.send("res", rid, True, task.result())

    # --------------------------------------------------------------- closing
    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        with contextlib.suppress(Exception):
            self._loop.remove_writer(self.sock.fileno())
        self.sock.close()
        self._queue.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkError("link closed"))
        for task in self._tasks:
            task.cancel()
        if self._on_closed is not None:
            self._on_closed()


def _received_socket(ancdata: list[tuple[int, int, bytes]]) -> socket.socket | None:
    """The descriptor a packet carried, as a socket (extra descriptors are closed)."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    if not fds:
        return None
    for extra in fds[1:]:
        with contextlib.suppress(OSError):
            socket.close(extra)
    return socket.socket(fileno=fds[0])
