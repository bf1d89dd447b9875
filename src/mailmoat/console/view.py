"""What the console reads from the gateway, asked of the gateway's own event loop from the
console's thread: the stats snapshot (the admin endpoint's), the ban list, the directory."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from mailmoat.config import Settings
from mailmoat.limits import ADMIN_REQUEST_TIMEOUT

T = TypeVar("T")
Snapshot = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]


class GatewayView:
    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        snapshot: Snapshot,
        bans: Any,
        directories: Any = None,
        harvest: Any = None,
    ) -> None:
        self.settings = settings
        self.loop = loop
        self._snapshot = snapshot
        self.bans = bans
        """policy.bans.BanList (ban_manually, unban, listed)."""
        self.directories = directories
        """directory.base.Directories or None (no directory configured)."""
        self.harvest = harvest
        """policy.harvest.HarvestDetector or None (harvest detection off)."""

    async def on_gateway(self, work: Coroutine[Any, Any, T]) -> T:
        """Run `work` on the gateway's loop; the console's loop waits without blocking."""
        future = asyncio.run_coroutine_threadsafe(work, self.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), ADMIN_REQUEST_TIMEOUT)

    async def snapshot(self) -> dict[str, Any]:
        async def take() -> dict[str, Any]:
            doc = self._snapshot()
            return await doc if inspect.isawaitable(doc) else doc

        return await self.on_gateway(take())

    async def harvest_scores(self, addresses: list[str]) -> dict[str, tuple[int, int]]:
        """Address -> its harvest score and its network's, within harvest.window."""
        if self.harvest is None or not addresses:
            return {}
        from mailmoat.policy.base import Client

        async def ask() -> dict[str, tuple[int, int]]:
            return {a: await self.harvest.scores(Client(a, 0)) for a in addresses}

        return await self.on_gateway(ask())

    async def lookup(self, address: str) -> tuple[str, str]:
        """(status, source) for `address`: valid, unknown, unavailable... and which directory."""
        domain = address.rpartition("@")[2].lower()
        if domain not in self.settings.domains.local:
            return "not a local domain", "none"
        source = self.settings.directory_for(domain)
        if self.directories is None:
            return "accepted (no directory)", source

        async def ask() -> str:
            status = self.directories.lookup(address, "127.0.0.1")
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
