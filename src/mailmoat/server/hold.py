"""The supervisor's hold on greeted connections: under a greet-and-leave flood, nothing is
handed over until its client talks.

A flood client that reads the 220 and leaves never needs a session; handed over at once it cost
a worker a session, the DNS checks' lookups for its address and a disconnect line. So while the
hold is engaged, the supervisor (`server.workers` > 0) keeps a greeted connection that it would
hand to a worker, watching it on its own event loop; when it becomes readable, a non-blocking
peek (the bytes stay in the socket, for the session) tells data from an end:

- data: it is handed over exactly as it would have been at once (the session reads what the
  client sent as its first input: pipelining and pregreet rules are the same);
- end of file or an error: it is closed here and its admission slot given back
  (`connections.left_after_greeting`, a debug line: it is not a refusal);
- silence: at its deadline (at most `HOLD_TIME`, never more than the greeting timeouts) it is
  handed over, with the seconds it waited (`Client.waited`): its session's deadlines count them,
  so the silence a client is allowed stays what `timeouts.greeting` says.

The hold engages only while such clients are seen (`HOLD_TRIGGER` within `HOLD_WINDOW`
seconds, counted here and from the sessions that end without a word, `LEFT_SILENT`; it stays on
`HOLD_ENGAGED` seconds after) or stress mode is on. Otherwise a connection is handed over at
once: held, an ordinary client paid a wake-up, a peek and a hand-over inside its EHLO round
trip, where the hand-over otherwise overlaps the greeting.

A client address that delivered a message lately (`vouch`, for `KNOWN_SENDER_TTL` seconds, at
most `KNOWN_SENDERS_MAX` addresses) is not held: its new connections are handed over at once,
so a regular sender does not pay the supervisor's wake-up inside its EHLO round trip while a
flood keeps the hold engaged. Nothing else changes for it: admission ran before, and its
session's checks run as for anyone.

At most `HOLD_MAX` connections are held at once; past that they are handed over at once. At
most `HOLD_PER_TURN` of them are looked at in one turn of the event loop: a flood's clients
leave together, and after a slow turn hundreds are readable at once (the poll is
level-triggered: the others are reported again next turn).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

from mailmoat.limits import (
    HOLD_ENGAGED,
    HOLD_MAX,
    HOLD_PER_TURN,
    HOLD_TRIGGER,
    HOLD_WINDOW,
    KNOWN_SENDER_TTL,
    KNOWN_SENDERS_MAX,
)
from mailmoat.policy.base import Client
from mailmoat.policy.networks import ExpiringCache

Handler = Callable[[socket.socket, Client], None]

LEFT_SILENT = "left_silent"
"""The tag a session leaves on its client when it ends without a HELO or a message: the client
closed after the 220 (a worker's count of them reaches the supervisor with `Closed`)."""

VOUCHED = "vouched"
"""The tag the supervisor gives a client whose address it vouches for (`vouch`): it travels with
the hand-over, and the worker starts its session before the others waiting for one."""

DELIVERED = "delivered"
"""The tag a session leaves on its client when a message of it was accepted: the supervisor
vouches for the address when the session ends (from a worker, with `Closed`)."""


class _Held:
    __slots__ = ("client", "since", "sock", "timer")

    def __init__(
        self, sock: socket.socket, client: Client, since: float, timer: asyncio.TimerHandle
    ) -> None:
        self.sock = sock
        self.client = client
        self.since = since
        self.timer = timer


class GreetedHold:
    """The greeted connections held, by descriptor. `talked(sock, client)` gets one whose
    client sent something or stayed silent to its deadline (`client.waited` set), `left(sock,
    client)` one whose client closed or reset it; either owns the socket from then on."""

    def __init__(self, talked: Handler, left: Handler) -> None:
        self.loop: asyncio.AbstractEventLoop  # the supervisor's, set when it starts
        self.talked = talked
        self.left = left
        self.held: dict[int, _Held] = {}
        self.limit = HOLD_MAX
        self._turn = 0  # readable connections looked at in this turn of the event loop
        self._window = 0.0  # when the current count of clients that left silent started
        self._leaving = 0  # clients that left silent in it
        self._until = 0.0  # the hold is engaged until then
        self._known = ExpiringCache(KNOWN_SENDERS_MAX)  # addresses that delivered lately

    def engaged(self) -> bool:
        """Whether greet-and-leave clients were seen lately: then hold, else hand over at once."""
        return time.monotonic() < self._until

    def saw_leaving(self, count: int) -> None:
        """`count` clients closed after the 220 without a word (here or in a session)."""
        now = time.monotonic()
        if now - self._window >= HOLD_WINDOW:
            self._window, self._leaving = now, 0
        self._leaving += count
        if self._leaving >= HOLD_TRIGGER:
            self._until = now + HOLD_ENGAGED

    def vouch(self, address: str) -> None:
        """A session from `address` had a message accepted: do not hold it for a while."""
        self._known.set(address, time.monotonic() + KNOWN_SENDER_TTL)

    def vouched(self, address: str) -> bool:
        return self._known.live(address, time.monotonic())

    def __len__(self) -> int:
        return len(self.held)

    def hold(self, sock: socket.socket, client: Client, seconds: float) -> bool:
        """Hold `sock` for up to `seconds`; False (nothing done) when `limit` are held."""
        if len(self.held) >= self.limit:
            return False
        fd = sock.fileno()
        try:
            self.loop.add_reader(fd, self._readable, fd)
        except (OSError, ValueError):
            return False
        now = self.loop.time()
        timer = self.loop.call_at(now + seconds, self._expired, fd)
        self.held[fd] = _Held(sock, client, now, timer)
        return True

    def _release(self, fd: int) -> _Held | None:
        entry = self.held.pop(fd, None)
        if entry is not None:
            entry.timer.cancel()
            with contextlib.suppress(OSError, ValueError):
                self.loop.remove_reader(fd)
            entry.client.waited = max(0.0, self.loop.time() - entry.since)
        return entry

    def _readable(self, fd: int) -> None:
        entry = self.held.get(fd)
        if entry is None:
            return
        if self._turn >= HOLD_PER_TURN:
            return  # still readable: reported again next turn
        if self._turn == 0:
            self.loop.call_soon(self._new_turn)
        self._turn += 1
        try:
            data = entry.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return  # nothing after all: go on watching
        except OSError:
            data = b""  # reset: gone
        self._release(fd)
        if data:
            self.talked(entry.sock, entry.client)
        else:
            self.saw_leaving(1)
            self.left(entry.sock, entry.client)

    def _new_turn(self) -> None:
        self._turn = 0

    def _expired(self, fd: int) -> None:
        entry = self._release(fd)
        if entry is not None:
            self.talked(entry.sock, entry.client)

    def close_all(self, farewell: bytes) -> list[Client]:
        """Stopping: write `farewell` to every connection held and close it (their clients
        sent nothing, so nothing is lost); returns their clients, whose slots are to go back."""
        clients = []
        for fd in list(self.held):
            entry = self._release(fd)
            if entry is None:
                continue
            with contextlib.suppress(OSError):
                entry.sock.send(farewell, socket.MSG_DONTWAIT)
            entry.sock.close()
            clients.append(entry.client)
        return clients
