"""What keeps the gateway from serving, for `GET /healthz`: not listening, or nowhere to
deliver (the downstream does not greet with 220 within `PROBE_TIMEOUT`, or the Maildir's tmp/
is not writable). A downstream probe is a connect, a read of the greeting and QUIT, at most
once per `PROBE_EVERY` seconds whatever the polling rate (the last answer is reused)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from mailmoat.config import Settings, split_endpoint
from mailmoat.config_checks import writable_dir

PROBE_TIMEOUT = 3.0
PROBE_EVERY = 5.0


class Health:
    def __init__(self, settings: Settings, listening: Callable[[], bool]) -> None:
        self.settings = settings
        self.listening = listening
        self._probed = -PROBE_EVERY
        self._downstream = ""
        self._lock = asyncio.Lock()

    async def problems(self) -> dict[str, str]:
        found: dict[str, str] = {}
        if not self.listening():
            found["listen"] = "not accepting connections"
        if self.settings.relay.downstream:
            why = await self._probe(self.settings.relay.downstream)
            if why:
                found["downstream"] = why
        else:
            tmp = Path(self.settings.maildir.path) / "tmp"
            if not writable_dir(tmp):
                found["maildir"] = f"{tmp} is not writable"
        return found

    async def _probe(self, endpoint: str) -> str:
        async with self._lock:
            if time.monotonic() - self._probed < PROBE_EVERY:
                return self._downstream
            self._downstream = await self._greeting(endpoint)
            self._probed = time.monotonic()
            return self._downstream

    @staticmethod
    async def _greeting(endpoint: str) -> str:
        host, port = split_endpoint(endpoint)
        writer = None
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
                line = await reader.readline()
                if not line.startswith(b"220"):
                    return f"{endpoint} greeted with {line[:80]!r}"
                writer.write(b"QUIT\r\n")
                await writer.drain()
                return ""
        except TimeoutError:
            return f"{endpoint} did not greet within {PROBE_TIMEOUT:g} s"
        except OSError as err:
            return f"{endpoint}: {err.strerror or err}"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
