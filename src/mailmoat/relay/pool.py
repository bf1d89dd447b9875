"""A bounded pool of connections to the downstream server (invariant 4: a bounded number).

A slot is taken before a connection is opened and given back only after it is fully closed, so
the number of open (or opening, or closing) connections never exceeds `relay.pool_size`. Idle
connections are reused newest first; each is closed after `relay.idle_timeout` unused seconds or
after `relay.max_messages_per_connection` messages. A connection that errored, was dropped, or
received anything unsolicited is never reused.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import ssl
from collections.abc import Awaitable, Callable

from mailmoat.config import Settings
from mailmoat.limits import DOWNSTREAM_CLOSE_TIMEOUT as CLOSE_TIMEOUT
from mailmoat.relay.capabilities import Capabilities
from mailmoat.relay.client_errors import DownstreamError
from mailmoat.relay.smtp_client import DownstreamClient, make_tls_context
from mailmoat.smtp.replies import reply

log = logging.getLogger("mailmoat.relay.pool")


class PoolExhausted(DownstreamError):
    """No downstream connection came free within `relay.pool_wait` (451 4.3.2)."""

    def __init__(self, detail: str) -> None:
        super().__init__(reply(451, "4.3.2", "Downstream busy, try again later"), detail)


class PoolClosed(DownstreamError):
    """The pool is shutting down (451 4.3.2)."""

    def __init__(self) -> None:
        super().__init__(reply(451, "4.3.2", "Shutting down, try again later"), "pool closed")


Connector = Callable[[], Awaitable[DownstreamClient]]


class DownstreamPool:
    """At most `pool_size` connections; `acquire()` one, use it, then `release()` it."""

    def __init__(self, settings: Settings, connect: Connector | None = None) -> None:
        self._settings = settings
        relay = settings.relay
        self.size = relay.pool_size
        self._wait = relay.pool_wait
        self._idle_timeout = relay.idle_timeout
        self._max_messages = relay.max_messages_per_connection
        self._connect = connect or self._default_connect
        self._tls: ssl.SSLContext | None = None
        self._idle: list[tuple[DownstreamClient, float]] = []
        """(connection, when it came back), oldest first: taken from the end, expired from
        the front by one timer for the pool (a timer per release cost more than the rest of
        the release)."""
        self._sweeper: asyncio.TimerHandle | None = None
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closing: set[asyncio.Task[None]] = set()
        self._open = 0
        self._busy = 0
        self._closed = False
        self.capabilities: Capabilities | None = None
        """The downstream's, from the EHLO/LHLO of the newest connection; None until one."""

    @property
    def open(self) -> int:
        """Connections opening, in use, idle or closing: never more than `size`."""
        return self._open

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def waiting(self) -> int:
        """Deliveries waiting for a connection to come free."""
        return len(self._waiters)

    async def _default_connect(self) -> DownstreamClient:
        if self._settings.relay.starttls != "off" and self._tls is None:
            self._tls = await asyncio.to_thread(make_tls_context, self._settings.relay)
        return await DownstreamClient.connect(self._settings, self._tls)

    async def acquire(self) -> DownstreamClient:
        """A healthy connection: an idle one, a new one, or one that comes free within pool_wait.

        Raises PoolExhausted when none comes free in time, or the connection error.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait
        while True:
            if self._closed:
                raise PoolClosed()
            client = self._take_idle()
            if client is not None:
                self._busy += 1
                return client
            if self._open < self.size:
                self._open += 1
                try:
                    client = await self._connect()
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
                self.capabilities = Capabilities.of(client.extensions)
                self._busy += 1
                return client
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise PoolExhausted(f"all {self.size} downstream connections busy")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout(remaining):
                    await waiter
            except BaseException as err:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_one()  # we were woken but are leaving: pass the turn on
                if isinstance(err, TimeoutError):
                    raise PoolExhausted(
                        f"all {self.size} downstream connections busy for {self._wait:g}s"
                    ) from None
                raise

    def release(self, client: DownstreamClient, reuse: bool = True) -> None:
        """Give a connection back; it is kept only if healthy and under its limits.

        `reuse=False` drops it at once (use it when the caller does not know its state)."""
        self._busy -= 1
        if not reuse:
            client.abort()  # state unknown (cancelled, or a bug): no QUIT, just drop it
        if (
            self._closed
            or not reuse
            or not client.usable
            or client.transactions >= self._max_messages
        ):
            self._retire(client)
            return
        loop = asyncio.get_running_loop()
        self._idle.append((client, loop.time()))
        if self._sweeper is None:
            self._sweeper = loop.call_later(self._idle_timeout, self._sweep)
        self._wake_one()

    def discard_idle(self) -> None:
        """Close every idle connection (e.g. after one was found dead)."""
        while self._idle:
            client, _ = self._idle.pop()
            self._retire(client)

    def _take_idle(self) -> DownstreamClient | None:
        while self._idle:
            client, _ = self._idle.pop()  # newest first; the oldest idle out
            if client.usable:
                return client
            self._retire(client)
        return None

    def _sweep(self) -> None:
        """Close the connections idle for `idle_timeout`; wait for the next one to be."""
        self._sweeper = None
        loop = asyncio.get_running_loop()
        idle = self._idle
        # a timer may fire a little early (uvloop counts milliseconds): a connection within a
        # millisecond of its time goes now, rather than the timer spinning for it
        cutoff = loop.time() - self._idle_timeout + 0.001
        expired = 0
        while expired < len(idle) and idle[expired][1] <= cutoff:
            expired += 1
        for client, _ in idle[:expired]:
            log.debug("closing downstream connection idle for %gs", self._idle_timeout)
            self._retire(client)
        del idle[:expired]
        if idle:
            self._sweeper = loop.call_at(idle[0][1] + self._idle_timeout, self._sweep)

    def _retire(self, client: DownstreamClient) -> None:
        """Close in the background; the slot is freed only once the connection is closed."""
        task = asyncio.get_running_loop().create_task(self._close_one(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close_one(self, client: DownstreamClient) -> None:
        try:
            await client.close(CLOSE_TIMEOUT)
        except Exception:  # never let a closing error leak a slot
            log.exception("closing a downstream connection")
            client.abort()
        finally:
            self._open -= 1
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        """Close idle connections, refuse new acquires, wait for closing ones (bounded)."""
        self._closed = True
        self.discard_idle()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        while self._waiters:
            self._wake_one()
        if self._closing:
            await asyncio.wait(set(self._closing), timeout=CLOSE_TIMEOUT + 1)
