"""Side services: what runs beside an existing MTA (the Postfix policy service, the milter),
on the same defences, store and counters as the gateway of this process.

Each is made by a factory in `FACTORIES` from the settings and the host (the one-process
`Gateway` or the `Supervisor`: never a worker), returning None when its setting is off. The
host starts them after its own listeners (`Front.start_sides`) and closes them first when it
stops. With `server.listen = []` the host listens on nothing and only they serve.

Adding one: a factory here, and its name in `FACTORIES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mailmoat.assembly import Defences
from mailmoat.config import Settings
from mailmoat.stats import Stats
from mailmoat.store import Store


class SideHost(Protocol):
    """What a side service may use of the process it runs in (the gateway or the
    supervisor); not `server.host.Host`, which is what an SMTP session needs of it."""

    settings: Settings
    store: Store
    defences: Defences
    stats: Stats


class SideService(Protocol):
    """A service that starts and closes. It may also have `name` (for its log lines) and
    `async reload(settings)` (SIGHUP: serve from the new settings, raising and keeping the
    old ones when it cannot; one without keeps its start-up settings to the next restart)."""

    async def start(self) -> object:
        """Listen; returns where (a `HOST:PORT`, a socket path, a list of them: for the
        start-up log line). Raises OSError when it cannot (the process does not start)."""
        ...

    async def close(self) -> None:
        """Stop listening, end the connections, release what `start` took."""
        ...


def service_name(service: SideService) -> str:
    return str(getattr(service, "name", type(service).__name__))


def policy_service(settings: Settings, host: SideHost) -> SideService | None:
    if not settings.policy.listen:
        return None
    from mailmoat.postfix_policy.service import PolicyService

    return PolicyService(settings, host.store, host.defences, host.stats)


def milter_service(settings: Settings, host: SideHost) -> SideService | None:
    if not settings.milter.listen:
        return None
    from mailmoat.milter.service import MilterService

    return MilterService(settings, store=host.store, stats=host.stats, defences=host.defences)


FACTORIES: tuple[Callable[[Settings, SideHost], SideService | None], ...] = (
    policy_service,
    milter_service,
)


def build_sides(settings: Settings, host: SideHost) -> list[SideService]:
    """The side services `settings` switch on."""
    return [s for make in FACTORIES if (s := make(settings, host)) is not None]
