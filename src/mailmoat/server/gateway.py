"""The running gateway: settings, checks, delivery, TLS and the listening sockets in one place."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import TYPE_CHECKING

from mailmoat import logs
from mailmoat.config import Settings, split_endpoint
from mailmoat.directory import build_directories
from mailmoat.policy.base import Check, Pipeline
from mailmoat.policy.dns_checks import build_dns_checks
from mailmoat.policy.harvest import HarvestCheck, HarvestDetector
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.policy.relay_access import RelayAccess
from mailmoat.relay import make_delivery
from mailmoat.relay.base import Delivery
from mailmoat.store import MemoryStore, Store

if TYPE_CHECKING:
    from mailmoat.server.session import SmtpSession


def default_checks(settings: Settings, store: Store | None = None) -> list[Check]:
    """The checks every gateway runs, in order.

    The DNS checks answer RCPT before the recipient directory is asked: a client they refuse
    learns nothing about which recipients exist, and costs the directory nothing.
    """
    store = store if store is not None else MemoryStore()
    checks: list[Check] = [RelayAccess(settings.domains)]
    directories = build_directories(settings, store)
    detector = None
    if directories is not None and settings.harvest.enabled:
        detector = HarvestDetector(settings.harvest, store, settings.domains.relay_networks)
        checks.append(HarvestCheck(detector))
    checks += build_dns_checks(settings, store)
    if directories is not None:
        checks.append(RecipientCheck(directories, detector))
    return checks


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    server = settings.server
    if server.tls_cert is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(server.tls_cert, server.tls_key)
    return ctx


class Gateway:
    def __init__(
        self,
        settings: Settings,
        *,
        delivery: Delivery | None = None,
        checks: list[Check] | None = None,
        store: Store | None = None,
    ) -> None:
        self.settings = settings
        self.store: Store = store if store is not None else MemoryStore()
        self.delivery = delivery if delivery is not None else make_delivery(settings)
        self.pipeline = Pipeline(
            checks if checks is not None else default_checks(settings, self.store)
        )
        self.tls_context = tls_context(settings)
        self.sessions: set[SmtpSession] = set()
        self.servers: list[asyncio.Server] = []

    async def start(self) -> list[tuple[str, int]]:
        """Open the listening sockets; returns the bound (host, port) pairs."""
        from mailmoat.server.session import SmtpSession

        loop = asyncio.get_running_loop()
        await self.pipeline.start()
        bound = []
        for endpoint in self.settings.server.listen:
            host, port = split_endpoint(endpoint)
            server = await loop.create_server(
                lambda: SmtpSession(self), host, port, reuse_address=True, backlog=1024
            )
            self.servers.append(server)
            for sock in server.sockets:
                addr = sock.getsockname()
                bound.append((addr[0], addr[1]))
        logs.event(
            "listening",
            addresses=[f"{h}:{p}" for h, p in bound],
            downstream=self.settings.relay.downstream or f"maildir:{self.settings.maildir.path}",
            domains=self.settings.domains.local,
        )
        return bound

    async def stop(self, grace: float = 10.0) -> None:
        """Stop accepting, let deliveries in flight finish (up to `grace` s), then close."""
        for server in self.servers:
            server.close()
        for session in list(self.sessions):
            session.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.sessions and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.abort()
        for server in self.servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        await self.pipeline.close()
        await self.delivery.close()
