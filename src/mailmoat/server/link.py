"""The channel between the supervisor and one worker process, and what travels on it.

A `SOCK_SEQPACKET` socket pair: a packet keeps its boundaries (no framing to get wrong) and the
kernel bounds what is in flight. A packet is one or more messages, each a frozen dataclass
below, encoded by `encode`/`decode` as `(tag, field, field, ...)` tuples of plain values in
`marshal`'s format (both ends are mailmoat processes of one Python, and marshal costs a
fraction of JSON). A packet also carries the file descriptors of its messages that hand one
over (`Message.carries_fd`), in message order (SCM_RIGHTS), so a burst of connections goes to
a worker in one system call.

Nothing here blocks: sends are non-blocking, and a message that does not fit into the socket
buffer now waits in a short queue (`MAX_QUEUED`); messages with descriptors are never queued
(`send_fds` says False and the supervisor tries elsewhere).

PROTOCOL
    Supervisor to worker:

    conn    Handover(conn_id, address, port, trusted, tags, verdict, greeted, waited)
            + a descriptor
            An admitted client connection, now the worker's: `conn_id` is the supervisor's
            number for it (the worker says Closed with it at the end), `trusted` and `tags`
            what admission marked, `verdict` admission's held greeting or None, `greeted`
            whether the 220 went out already, `waited` the seconds since then that the
            supervisor held it (server/hold.py). No answer.
    stress  StressMode(on)
            Stress mode switched on or off (the supervisor counts the connections). No answer.
    stop    Stop(grace)
            Stop: let deliveries in flight finish for up to `grace` seconds, then exit.

    Worker to supervisor:

    ready   Ready(pid)
            Started; connections may come.
    failed  Failed(error)
            Could not start, and why (one line); the worker exits.
    closed  Closed(conn_ids, silent)
            These handed-over connections ended: give their admission slots back; `silent`
            of them closed after the 220 without a word (server/hold.py counts them). At
            most one a turn of the worker's event loop, however many ended in it.
    strike  Strike(address, reason)
            The client at `address` did something that counts towards a ban (`reason`, one
            of policy.bans.STRIKE_REASONS; anything else is ignored).

    Either way:

    req     Request(request_id, name, args)
            Ask the other side (`Link.request`): "store" with a Store method and its
            arguments (worker to supervisor, store.remote.OPERATIONS), "snapshot" for the
            counters (supervisor to worker), "reload" with the validated settings as JSON
            octets (supervisor to worker; the answer is "ok", or the error that kept the
            worker on its old settings).
    res     Answer(request_id, ok, value)
            The answer to request `request_id`: its value, or (ok false) the error's text.

    A message of an unknown tag, or with the wrong number of fields, is logged and dropped
    (its descriptor closed). To add a message: a `Message` subclass with a new `tag` and
    its fields, decorated with `@message` (which makes it a frozen dataclass and registers
    it), a branch in the receiver's handler, and its entry here.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any, ClassVar, TypeVar, cast, dataclass_transform

from mailmoat import logs
from mailmoat.limits import LINK_MAX_FDS as MAX_FDS
from mailmoat.limits import LINK_MAX_MESSAGE as MAX_MESSAGE
from mailmoat.limits import LINK_MAX_PENDING as MAX_PENDING
from mailmoat.limits import LINK_MAX_QUEUED as MAX_QUEUED
from mailmoat.limits import LINK_READS_PER_TURN as READS_PER_TURN
from mailmoat.limits import LINK_REQUEST_TIMEOUT
from mailmoat.policy.base import Decision, Verdict
from mailmoat.smtp.replies import Reply

_FDS = socket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)


# ---------------------------------------------------------------- messages
class Message:
    """A link message: a frozen dataclass with a `tag` of its own (see the protocol above)."""

    __slots__ = ()
    tag: ClassVar[str]
    carries_fd: ClassVar[bool] = False
    _fields: ClassVar[Callable[..., tuple[Any, ...]]]  # attrgetter of the fields, by `message`

    def wire(self) -> tuple[Any, ...]:
        """The fields as plain values, in order (a message with richer fields overrides it)."""
        return self._fields(self)

    @classmethod
    def from_wire(cls, values: Sequence[Any]) -> Message:
        make: Callable[..., Message] = cls
        return make(*values)


M = TypeVar("M", bound=type[Message])
_TAGS: dict[str, type[Message]] = {}


@dataclass_transform(eq_default=True)
def message(cls: M) -> M:
    """Make a message class a frozen dataclass (slots, no __dict__) and register its tag."""
    cls = cast(M, dataclass(frozen=True, slots=True)(cls))
    if cls.tag in _TAGS:
        raise ValueError(f"link message tag {cls.tag!r} used twice")
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    getter = attrgetter(*names)
    cls._fields = staticmethod(lambda m: (getter(m),)) if len(names) == 1 else getter
    _TAGS[cls.tag] = cls
    return cls


@message
class Handover(Message):
    tag = "conn"
    carries_fd = True
    conn_id: int
    address: str
    port: int
    trusted: bool
    tags: tuple[str, ...]
    verdict: Verdict
    greeted: bool
    waited: float = 0.0

    def wire(self) -> tuple[Any, ...]:
        return (
            self.conn_id,
            self.address,
            self.port,
            self.trusted,
            self.tags,
            _verdict_out(self.verdict),
            self.greeted,
            self.waited,
        )

    @classmethod
    def from_wire(cls, values: Sequence[Any]) -> Message:
        conn_id, address, port, trusted, tags, verdict, greeted, waited = values
        held = _verdict_in(verdict)
        return cls(conn_id, address, port, trusted, tags, held, greeted, float(waited))


@message
class StressMode(Message):
    tag = "stress"
    on: bool


@message
class Stop(Message):
    tag = "stop"
    grace: float


@message
class Ready(Message):
    tag = "ready"
    pid: int


@message
class Failed(Message):
    tag = "failed"
    error: str


@message
class Closed(Message):
    tag = "closed"
    conn_ids: tuple[int, ...]
    silent: int = 0
    delivered: tuple[int, ...] = ()
    """Of `conn_ids`, the sessions that had a message accepted (`hold.DELIVERED`)."""


@message
class Strike(Message):
    tag = "strike"
    address: str
    reason: str


@message
class Request(Message):
    tag = "req"
    request_id: int
    name: str
    args: tuple[Any, ...]


@message
class Answer(Message):
    tag = "res"
    request_id: int
    ok: bool
    value: Any


def _verdict_out(verdict: Verdict) -> Any:
    """A held greeting as plain values: None, (reply,) or (reply, delay, close), a reply as
    (code, enhanced, lines); a decision's reason stays behind."""
    if verdict is None:
        return None
    answer = verdict if isinstance(verdict, Reply) else verdict.reply
    wired = (answer.code, answer.enhanced, answer.lines) if answer is not None else None
    return (wired,) if isinstance(verdict, Reply) else (wired, verdict.delay, verdict.close)


def _verdict_in(data: Any) -> Verdict:
    if data is None:
        return None
    answer = Reply(data[0][0], data[0][1], tuple(data[0][2])) if data[0] else None
    return answer if len(data) == 1 else Decision(answer, float(data[1]), bool(data[2]))


def encode(messages: Iterable[Message]) -> bytes:
    """One packet's payload."""
    data = marshal.dumps(tuple([(m.tag, *m.wire()) for m in messages]))
    if len(data) > MAX_MESSAGE:
        raise ValueError(f"link message too large: {len(data)} octets")
    return data


def decode(data: bytes) -> list[Message]:
    """The messages of one packet; ValueError for anything that is not one."""
    try:
        items = marshal.loads(data)
    except (EOFError, ValueError, TypeError) as err:
        raise ValueError(f"undecodable link packet: {err}") from None
    if not isinstance(items, tuple):
        raise ValueError("link packet is not a tuple of messages")
    out = []
    for item in items:
        if not isinstance(item, tuple) or not item or item[0] not in _TAGS:
            raise ValueError(f"unknown link message {str(item)[:80]}")
        try:
            out.append(_TAGS[item[0]].from_wire(item[1:]))
        except (TypeError, ValueError, IndexError) as err:
            raise ValueError(f"malformed link message {item[0]!r}: {err}") from None
    return out


# -------------------------------------------------------------------- link
Handler = Callable[[Message, socket.socket | None], None]
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

    `on_message(message, sock)` gets every message that is not a Request or an Answer (`sock`
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
    def send(self, message: Message) -> bool:
        """Send one message; False when the link is closed or hopelessly backed up."""
        if self.closed:
            return False
        data = encode((message,))
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

    def send_fds(self, batch: Sequence[tuple[Message, int]]) -> bool:
        """Send up to MAX_FDS messages with a descriptor each in one packet, now or never
        (False: link closed or full). The caller keeps its own copies of the descriptors."""
        if self.closed or self._queue:
            return False
        if len(batch) > MAX_FDS:
            raise ValueError(f"more than {MAX_FDS} descriptors in one link packet")
        data = encode(m for m, _ in batch)
        fds = array.array("i", [fd for _, fd in batch])
        try:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
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

    async def request(self, name: str, *args: Any, timeout: float = LINK_REQUEST_TIMEOUT) -> Any:
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
            if not self.send(Request(rid, name, args)):
                raise LinkError("link closed")
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise LinkError(f"no answer to {name} in {timeout:g} s") from None
        finally:
            self._pending.pop(rid, None)

    # -------------------------------------------------------------- receiving
    def _readable(self) -> None:
        handled = 0
        while handled < READS_PER_TURN:
            try:
                data, ancdata, flags, _ = self.sock.recvmsg(MAX_MESSAGE, _FDS)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            handled += 1
            socks = _received_sockets(ancdata)
            if not data and not socks:
                self.close()  # the other side closed its end
                return
            if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
                _close_all(socks)
                logs.event("link_truncated", logging.WARNING, size=len(data))
                continue
            try:
                messages = decode(data)
            except ValueError:
                _close_all(socks)
                logs.log.exception("bad link message")
                continue
            if sum(m.carries_fd for m in messages) != len(socks):
                _close_all(socks)
                logs.event("link_descriptors", logging.WARNING, received=len(socks))
                continue
            handled += len(messages) - 1
            fds = iter(socks)
            for message in messages:
                sock = next(fds) if message.carries_fd else None
                try:
                    self._dispatch(message, sock)
                except Exception:
                    if sock is not None:
                        sock.close()
                    logs.log.exception("bad link message")

    def _dispatch(self, message: Message, sock: socket.socket | None) -> None:
        if isinstance(message, Answer):
            fut = self._pending.get(message.request_id)
            if fut is not None and not fut.done():
                if message.ok:
                    fut.set_result(message.value)
                else:
                    fut.set_exception(LinkError(str(message.value)))
        elif isinstance(message, Request):
            self._answer(message.request_id, message.name, message.args)
        else:
            self._on_message(message, sock)

    def _answer(self, rid: int, name: str, args: tuple[Any, ...]) -> None:
        if self._serve is None:
            self.send(Answer(rid, False, "no requests served here"))
            return
        try:
            result = self._serve(name, args)
        except Exception as err:
            self.send(Answer(rid, False, repr(err)))
            return
        if not inspect.isawaitable(result):
            self.send(Answer(rid, True, result))
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
            self.send(Answer(rid, False, repr(err)))
        else:
            self.send(Answer(rid, True, task.result()))

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


def _received_sockets(ancdata: list[tuple[int, int, bytes]]) -> list[socket.socket]:
    """The descriptors a packet carried, as sockets."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return [socket.socket(fileno=fd) for fd in fds]


def _close_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        sock.close()
