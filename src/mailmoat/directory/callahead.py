"""Call-ahead: ask the internal server whether an address exists, with a probe transaction.

A probe is EHLO, MAIL FROM:<sender>, RCPT TO:<address>, RSET, QUIT over the downstream client
(`relay/smtp_client.py`): never DATA, so no message and no bounce can come of it. The answer
is cached in the Store: a 2xx for `positive_ttl` seconds, a 5xx for `negative_ttl`; anything
else (4xx, no connection, a timeout) is not cached and gives 451 4.4.3.

A harvest must not turn into load on the internal server: probes are limited per minute in all
(`probes_per_minute`) and per client IP (`source_probes_per_minute`), at most `concurrency` run
at once, and concurrent lookups of the same address share one probe. An address that would need
a probe beyond a limit gets 451 4.4.3 (the sender retries later; nothing is lost). The limits
are sliding windows in the Store; with a shared store they hold for all nodes together (a
check-then-record that several nodes may overshoot by a probe or two).

An address with sender-specified routing (`user%host`, `host!user`, `"user@host"`) is never
probed and never vouched for: the server inside may well accept it, to relay it elsewhere.
"""

from __future__ import annotations

import asyncio
import logging

from mailmoat import logs
from mailmoat.config import Settings
from mailmoat.directory.base import Directory, LookupResult, ResultCache, SingleFlight, Status
from mailmoat.limits import CALLAHEAD_RATE_WINDOW as WINDOW
from mailmoat.relay.client_errors import DownstreamError
from mailmoat.relay.smtp_client import DownstreamClient
from mailmoat.smtp._abnf import routing_local_part
from mailmoat.store.base import Store


class CallAheadDirectory(Directory):
    name = "callahead"

    def __init__(self, settings: Settings, store: Store) -> None:
        ca = settings.callahead
        self.config = ca
        server = ca.server or settings.relay.downstream
        relay = settings.relay.model_copy(update={"downstream": server})
        self.settings = settings.model_copy(update={"relay": relay})
        self.store = store
        self.cache = ResultCache(store, "dir:ca:", ca.positive_ttl, ca.negative_ttl)
        self._sem = asyncio.Semaphore(ca.concurrency)
        self._flights = SingleFlight()
        self.probes = 0
        """Probes sent (connections made to the server)."""
        self.limited = 0
        """Lookups answered 451 because a probe limit was reached."""

    def lookup(self, local: str, domain: str, source: str) -> LookupResult:
        if routing_local_part(local):
            return Status.UNKNOWN
        return self._lookup(f"{local}@{domain}", source)

    async def _lookup(self, address: str, source: str) -> Status:
        cached = await self.cache.get(address)
        if cached is not None:
            return cached[0]
        task = self._flights.pending(address)
        if task is None:
            if not await self._allowed(source):
                self.limited += 1
                return Status.UNAVAILABLE
            task = self._flights.start(address, self._probe_and_cache(address))
        return await asyncio.shield(task)

    async def _probe_and_cache(self, address: str) -> Status:
        status = await self._probe(address)
        await self.cache.put(address, status)
        return status

    async def _allowed(self, source: str) -> bool:
        ca, store = self.config, self.store
        src_key, all_key = f"ca:src:{source}", "ca:all"
        if await store.count(src_key, WINDOW) >= ca.source_probes_per_minute:
            return False
        if await store.count(all_key, WINDOW) >= ca.probes_per_minute:
            return False
        await store.hit(src_key, WINDOW, ca.source_probes_per_minute)
        await store.hit(all_key, WINDOW, ca.probes_per_minute)
        return True

    async def _probe(self, address: str) -> Status:
        async with self._sem:
            self.probes += 1
            client: DownstreamClient | None = None
            try:
                async with asyncio.timeout(self.config.timeout):
                    client = await DownstreamClient.connect(self.settings)
                    mail, rcpt = await client.probe(self.config.sender, address)
            except (DownstreamError, TimeoutError) as err:
                logs.event("callahead_failed", logging.WARNING, address=address, error=str(err))
                return Status.UNAVAILABLE
            finally:
                if client is not None:
                    await client.close(timeout=2.0)
        if rcpt is None:
            logs.event("callahead_failed", logging.WARNING, address=address, mail=str(mail))
            return Status.UNAVAILABLE
        logs.event("callahead", logging.DEBUG, address=address, reply=str(rcpt))
        if rcpt.positive:
            return Status.VALID
        return Status.UNKNOWN if rcpt.permanent else Status.UNAVAILABLE

    async def close(self) -> None:
        self._flights.cancel()
