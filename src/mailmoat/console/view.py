"""What the console reads from the gateway, asked of the gateway's own event loop from the
console's thread: the stats snapshot (the admin endpoint's), the ban list, the directory, the
harvest scores. Everything is looked up at each request, so a reload (SIGHUP), which replaces
the settings and the checks, is seen at once."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Coroutine
from typing import Any, TypeVar

from mailmoat.config import Settings
from mailmoat.limits import ADMIN_REQUEST_TIMEOUT

T = TypeVar("T")


class GatewayView:
    def __init__(self, gateway: Any, loop: asyncio.AbstractEventLoop) -> None:
        """`gateway`: a Gateway or a Supervisor; `loop`: the one it runs on."""
        self.gateway = gateway
        self.loop = loop

    @property
    def settings(self) -> Settings:
        """The settings in force (the last reload's)."""
        settings: Settings = self.gateway.settings
        return settings

    async def on_gateway(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the gateway's loop; the console's loop waits without blocking."""
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), ADMIN_REQUEST_TIMEOUT)

    async def snapshot(self) -> dict[str, Any]:
        """The stats document (a supervisor's with its workers' added in)."""

        async def take() -> dict[str, Any]:
            gateway = self.gateway
            doc = gateway.snapshot() if hasattr(gateway, "snapshot") else gateway.stats.snapshot()
            result: dict[str, Any] = await doc if inspect.isawaitable(doc) else doc
            return result

        return await self.on_gateway(take())

    async def bans(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = await self.on_gateway(self.gateway.defences.bans.listed())
        return listed

    async def ban(self, target: str, seconds: float) -> dict[str, Any]:
        """ValueError for a bad target or duration."""
        done: dict[str, Any] = await self.on_gateway(
            self.gateway.defences.bans.ban_manually(target, seconds)
        )
        return done

    async def unban(self, target: str) -> bool:
        return bool(await self.on_gateway(self.gateway.defences.bans.unban(target)))

    async def harvest_scores(self, addresses: list[str]) -> dict[str, tuple[int, int]]:
        """Address -> its harvest score and its network's, within harvest.window."""
        from mailmoat.policy.base import Client

        async def ask() -> dict[str, tuple[int, int]]:
            check = recipient_check_of(self.gateway)
            if check is None or check.detector is None:
                return {}
            return {a: await check.detector.scores(Client(a, 0)) for a in addresses}

        return await self.on_gateway(ask()) if addresses else {}

    async def lookup(self, address: str) -> tuple[str, str]:
        """(status, source) for `address`: valid, unknown, unavailable... and which directory."""
        settings = self.settings
        domain = address.rpartition("@")[2].lower()
        if domain not in settings.domains.local:
            return "not a local domain", "none"
        source = settings.directory_for(domain)

        async def ask() -> str:
            check = recipient_check_of(self.gateway)
            if check is None:
                return "accepted (no directory)"
            status = check.directories.lookup(address, "127.0.0.1")
            if inspect.isawaitable(status):
                status = await status
            if status is None:
                return "accepted (no directory)"
            return str(getattr(status, "name", status)).lower()

        return await self.on_gateway(ask()), source


def recipient_check_of(gateway: Any) -> Any:
    """The gateway's recipient check (a supervisor's local sessions'), or None: its
    `directories` answer the lookups, its `detector` the harvest scores."""
    from mailmoat.policy.recipients import RecipientCheck

    host = getattr(gateway, "local", gateway)
    for check in getattr(host.pipeline, "checks", []):
        if isinstance(check, RecipientCheck):
            return check
    return None
