"""Reloading the configuration on SIGHUP (issue 13 item 2).

The process that got the signal (the one-process gateway, or the supervisor of workers) reads
the file again with the checks `config check` and the start run (`load`), compares it with the
settings in force, and applies it. Applying builds the new state with the functions that build
it at start (the checks, the directories and lists, delivery, the TLS context:
`Gateway.reload`), and the supervisor passes the validated settings on to every worker over its
link (a `reload` request), which does the same. New sessions take the new state; a session in
flight keeps the one it started with (`host.HostState`) to its end. The connection-level
defences keep their objects and with them their state (connection counts, bans, strikes,
stress mode, the store): they read the new settings from now on (`reconfigure_defences`).

A file that does not load, or a state that cannot be built (a missing certificate, a bad
directory file), is refused with one log line and the old configuration stays. Settings that
only a restart can change (`RESTART`) keep their old value and are named in the log line.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from mailmoat import logs
from mailmoat.assembly import Defences
from mailmoat.config import ConfigError, Settings
from mailmoat.config_checks import setting_problems
from mailmoat.policy.networks import NetworkSet
from mailmoat.server import sdnotify

RESTART = (
    "server.listen",  # the listening sockets are bound once, before privileges are dropped
    "server.proxy_protocol",  # read by the listeners, which are set up once with them
    "server.workers",
    "server.clean_lane",  # the lane is a worker process, started with the others
    "server.user",
    "server.group",
    "server.hostname",  # prebuilt into the greeting and the admission refusals
    "server.uvloop",
    "server.spool_memory_total",  # shared out between the processes at start
    "admission.max_connections",  # fitted to the descriptor limit at start; stress follows it
    "admission.ipv4_prefix",  # the open connections are counted per network of this size
    "admission.ipv6_prefix",
    "store",  # the store and what it holds live on
    "packetfilter",  # the kernel table is made once, at start
    "admin",  # the admin listener
    "log",
    "policy.listen",  # a side service's listener is opened once
    "milter.listen",
)
"""Settings (or whole sections) a reload does not change: they keep the value they started
with, and the reload's log line names them when the file changed them."""


def flat(settings: Settings) -> dict[str, Any]:
    """Every setting as `section.key` -> value."""
    return {
        f"{section}.{key}": value
        for section, values in settings.model_dump(mode="json").items()
        for key, value in values.items()
    }


def changed_keys(old: Settings, new: Settings) -> list[str]:
    """The settings whose values differ, in the model's order."""
    before, after = flat(old), flat(new)
    return [key for key in after if before.get(key) != after[key]]


def needs_restart(key: str) -> bool:
    return any(key == name or key.startswith(name + ".") for name in RESTART)


def keep_restart_only(old: Settings, new: Settings, keys: list[str]) -> Settings:
    """`new`, with the settings in `keys` (restart-only ones) as they were in `old`."""
    sections: dict[str, dict[str, Any]] = {}
    for key in keys:
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = getattr(getattr(old, section), name)
    update = {
        section: getattr(new, section).model_copy(update=values)
        for section, values in sections.items()
    }
    return new.model_copy(update=update)


def reconfigure_defences(defences: Defences, settings: Settings) -> None:
    """The connection-level defences read `settings` from now on; their state stays. (What
    they prebuilt from restart-only settings, the host name in their replies, stays too.)"""
    stress = defences.stress
    stress.settings = settings.stress
    stress.set_capacity(stress.capacity)
    defences.bans.settings = settings.bans
    defences.bans.enabled = settings.bans.strikes > 0
    defences.pregreet.settings = settings.pregreet
    defences.tarpit.settings = settings.tarpit
    admission = getattr(defences, "admission", None)  # a worker's connect stage is elsewhere
    if admission is not None:
        a = settings.admission
        admission.settings = a
        admission.allow = NetworkSet(a.allow_networks)
        admission.deny = NetworkSet(a.deny_networks)
        admission.lists = bool(admission.allow or admission.deny)


class Reloadable(Protocol):
    """A process that reloads: the gateway or the supervisor."""

    settings: Settings

    async def reload(self, settings: Settings) -> list[str]:
        """Apply `settings` (raises, changing nothing here, when it cannot); returns what
        failed elsewhere (a worker), one line each."""
        ...


class Reloader:
    """Turns each SIGHUP into one reload, one after the other, each logged on one line."""

    def __init__(self, target: Reloadable, load: Callable[[], Settings]) -> None:
        """`load` reads and checks the configuration as the start did (ConfigError if bad)."""
        self.target = target
        self.load = load
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()

    def request(self) -> None:
        """The signal handler: a reload after those already asked for."""
        task = asyncio.get_running_loop().create_task(self.run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self) -> bool:
        """Reload once; whether the new configuration is in force."""
        async with self._lock:
            sdnotify.notify("RELOADING=1")
            try:
                return await self._reload()
            finally:
                sdnotify.notify("READY=1")

    async def _reload(self) -> bool:
        old = self.target.settings
        try:
            new = self.load()
        except ConfigError as err:
            return _refused("; ".join(f"{key}: {reason}" for key, reason in err.problems))
        except Exception as err:  # an unreadable file, say: the old configuration stays
            return _refused(_one_line(err))
        changed = changed_keys(old, new)
        restart = [key for key in changed if needs_restart(key)]
        applied = keep_restart_only(old, new, restart)
        problems = setting_problems(applied)  # restart-only values put back can make a loop
        if problems:
            return _refused("; ".join(f"{key}: {reason}" for key, reason in problems))
        try:
            failed = await self.target.reload(applied)
        except Exception as err:
            return _refused(_one_line(err))
        logs.event(
            "reload",
            logging.WARNING if failed else logging.INFO,
            status="ok",
            changed=[key for key in changed if key not in restart] or "none",
            need_restart=restart or None,
            failed=failed or None,
        )
        return True


def _refused(reason: str) -> bool:
    logs.event("reload", logging.ERROR, status="refused", reason=reason)
    return False


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text[:500]
