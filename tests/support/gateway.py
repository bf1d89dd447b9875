"""Run a real mailmoat Gateway on a loopback port in a background thread, for tests that drive
it with blocking clients (smtplib, sockets, swaks, smtp-source, Postfix)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailmoat import config
from mailmoat.server.gateway import Gateway
from tests.support.waiting import DEADLINE


class RunningGateway:
    def __init__(
        self, settings: config.Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.loop = asyncio.new_event_loop()
        self.gateway: Gateway | None = None
        self.port = 0
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.gateway = Gateway(self.settings, clock=self.clock)
            bound = self.loop.run_until_complete(self.gateway.start())
            self.port = bound[0][1] if bound else 0  # 0: only side services (server.listen = [])
        except BaseException as err:  # reported to the test thread
            self._error = err
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()

    def start(self) -> RunningGateway:
        self._thread.start()
        assert self._ready.wait(DEADLINE), "the gateway did not start"
        if self._error is not None:
            raise self._error
        return self

    def call(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the gateway's loop and return its result."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn(*args))
            done.set()

        self.loop.call_soon_threadsafe(run)
        assert done.wait(DEADLINE), f"{fn} did not run on the gateway's loop"
        return box[0]

    def run(self, coro: Any) -> Any:
        """Run a coroutine on the gateway's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(DEADLINE)

    def stop(self) -> None:
        if self.gateway is not None:
            fut = asyncio.run_coroutine_threadsafe(self.gateway.stop(grace=2), self.loop)
            fut.result(DEADLINE)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(DEADLINE)
        self.loop.close()


def gateway_settings(maildir: Path, **overrides: Any) -> config.Settings:
    """Settings for a test gateway: loopback, free port, example.test local, Maildir in tmp."""
    base: dict[str, Any] = {
        "server.listen": ["127.0.0.1:0"],
        "server.hostname": "mx.mailmoat.test",
        "server.uvloop": False,
        "domains.local": ["example.test"],
        "maildir.path": str(maildir),
        # the DNS checks have their own tests (tests/policy/test_dns_*.py) with a DNS server
        "dns.checks": False,
    }
    base.update(overrides)
    return config.load(None, base)


@contextmanager
def running_gateway(maildir: Path, **overrides: Any) -> Iterator[RunningGateway]:
    gw = RunningGateway(gateway_settings(maildir, **overrides)).start()
    try:
        yield gw
    finally:
        gw.stop()


@contextmanager
def clocked_gateway(
    maildir: Path, clock: Callable[[], float], **overrides: Any
) -> Iterator[RunningGateway]:
    """Like `running_gateway`, with `clock` driving the store, bans and rate windows (the
    session deadlines keep the event loop's clock)."""
    gw = RunningGateway(gateway_settings(maildir, **overrides), clock).start()
    try:
        yield gw
    finally:
        gw.stop()
