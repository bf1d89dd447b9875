"""What keeps the gateway from serving, for `GET /healthz`: not listening, or nowhere to
deliver (the downstream cannot be reached with the relay's own client within
relay.connect_timeout, or the Maildir's tmp/ is not writable). A downstream probe is the
relay's connect (greeting, EHLO/LHLO) and QUIT, at most once per `PROBE_EVERY` seconds whatever
the polling rate (the last answer is reused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from mailmoat.config import Settings
from mailmoat.config_checks import writable_dir
from mailmoat.limits import HEALTH_PROBE_EVERY as PROBE_EVERY
from mailmoat.relay.client_errors import DownstreamError
from mailmoat.relay.smtp_client import DownstreamClient


class Health:
    def __init__(self, settings: Callable[[], Settings], listening: Callable[[], bool]) -> None:
        """`settings`: the current ones (a reload may change where mail goes)."""
        self.settings = settings
        self.listening = listening
        self._probed = -PROBE_EVERY
        self._downstream = ""
        self._probed_where: str | None = None
        self._lock = asyncio.Lock()

    async def problems(self) -> dict[str, str]:
        found: dict[str, str] = {}
        settings = self.settings()
        if not self.listening():
            found["listen"] = "not accepting connections"
        if not settings.server.listen:  # only the side services: nothing is delivered
            return found
        if settings.relay.downstream:
            why = await self._probe(settings)
            if why:
                found["downstream"] = why
        else:
            tmp = Path(settings.maildir.path) / "tmp"
            if not writable_dir(tmp):
                found["maildir"] = f"{tmp} is not writable"
        return found

    async def _probe(self, settings: Settings) -> str:
        async with self._lock:
            where = settings.relay.downstream
            if where == self._probed_where and time.monotonic() - self._probed < PROBE_EVERY:
                return self._downstream
            self._downstream = await self._reach(settings)
            self._probed, self._probed_where = time.monotonic(), where
            return self._downstream

    async def _reach(self, settings: Settings) -> str:
        try:
            client = await DownstreamClient.connect(settings)
        except DownstreamError as err:
            return err.detail
        await client.close()
        return ""
