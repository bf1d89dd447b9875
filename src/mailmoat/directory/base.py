"""Who the valid recipients are: one interface, several sources, a router per domain.

A `Directory` answers one question about an address: it exists (VALID), it does not (UNKNOWN), or
the source cannot vouch either way right now (UNAVAILABLE: the caller must answer 4xx, never
accept). `lookup` may answer at once (in-memory sources: no task, no await on the hot path) or
return an awaitable (sources that have to ask someone).

Addresses are compared case-insensitively, as every mail system in practice does: the domain
is lower-cased by the SMTP engine, the local part here; a quoted local part that needs no quotes
("alice"@example.org) is the same mailbox as the unquoted one.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from mailmoat.smtp._abnf import ascii_lower
from mailmoat.store.base import Store


class Status(enum.Enum):
    VALID = "valid"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"


LookupResult = Status | Awaitable[Status]

_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\x80-\U0010ffff-]+"
_DOT_ATOM = re.compile(rf"^{_ATOM}(\.{_ATOM})*$")


def normalise_local(local: str) -> str:
    """The comparison form of a local part: A-Z lower-cased (`str.lower` would fold KELVIN
    SIGN onto `k`, vouching for a mailbox the internal server sees as another), needless
    quotes removed."""
    if len(local) >= 2 and local[0] == local[-1] == '"' and "\\" not in local:
        inner = local[1:-1]
        if _DOT_ATOM.match(inner):
            local = inner
    return ascii_lower(local)


def split_address(address: str) -> tuple[str, str]:
    """'Local@Domain' -> ('local', 'domain') in comparison form; no '@' gives ('address', '')."""
    local, at, domain = address.rpartition("@")
    if not at:
        return normalise_local(address), ""
    return normalise_local(local), ascii_lower(domain).rstrip(".")


@dataclass(frozen=True, slots=True)
class AddressSet:
    """An in-memory directory: exact addresses ('local@domain', comparison form) and catch-all
    domains. Immutable, so a refresh swaps the whole set in one assignment."""

    addresses: frozenset[str] = frozenset()
    catchall: frozenset[str] = frozenset()

    def has(self, local: str, domain: str) -> bool:
        return domain in self.catchall or f"{local}@{domain}" in self.addresses

    def __len__(self) -> int:
        return len(self.addresses) + len(self.catchall)


class AddressSetBuilder:
    """Collects addresses for an `AddressSet`, refusing to grow past `max_entries`."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.addresses: set[str] = set()
        self.catchall: set[str] = set()

    def add(self, address: str) -> None:
        """Add 'user@domain', or '@domain' for a catch-all. ValueError when it is no address."""
        address = address.strip()
        local, at, domain = address.rpartition("@")
        domain = ascii_lower(domain).rstrip(".")
        if not at or not domain or " " in domain or "@" in domain:
            raise ValueError(f"not an address: {address!r}")
        if not local:
            self.catchall.add(domain)
        elif any(c.isspace() for c in local) and not local.startswith('"'):
            raise ValueError(f"not an address: {address!r}")
        else:
            self.addresses.add(f"{normalise_local(local)}@{domain}")
        if len(self.addresses) + len(self.catchall) > self.max_entries:
            raise OverflowError(f"more than {self.max_entries} addresses")

    def build(self) -> AddressSet:
        return AddressSet(frozenset(self.addresses), frozenset(self.catchall))


class Directory(ABC):
    """One source of valid recipients."""

    name = "directory"

    @abstractmethod
    def lookup(self, local: str, domain: str, source: str) -> LookupResult:
        """Does local@domain exist? `local` and `domain` are in comparison form; `source` is the
        client IP that asks (sources that cost something to ask limit per source)."""

    async def start(self) -> None:
        """Load what the source needs before the gateway accepts connections."""
        return None

    async def close(self) -> None:
        """Stop background work and release connections."""
        return None


class Directories:
    """Routes a recipient to the directory of its domain; domains without one are not checked."""

    def __init__(
        self,
        by_domain: dict[str, Directory],
        *,
        delimiter: str = "",
        always_valid: Iterable[str] = (),
    ) -> None:
        self.by_domain = by_domain
        self.delimiter = delimiter
        self.always_valid = frozenset(always_valid)
        self.directories = list({id(d): d for d in by_domain.values()}.values())

    def lookup(self, address: str, source: str) -> LookupResult | None:
        """None when the recipient's domain has no directory; otherwise the directory's answer
        (for user+tag@domain with a delimiter: the answer for user@domain when the full address
        is unknown)."""
        local, domain = split_address(address)
        directory = self.by_domain.get(domain)
        if directory is None:
            return None
        if local in self.always_valid:
            return Status.VALID
        result = directory.lookup(local, domain, source)
        d = self.delimiter
        if not d or d not in local[1:]:
            return result
        base = local[: local.index(d, 1)]
        if inspect.isawaitable(result):
            return self._then_base(result, directory, base, domain, source)
        if result is Status.UNKNOWN:
            return directory.lookup(base, domain, source)
        return result

    @staticmethod
    async def _then_base(
        pending: Awaitable[Status], directory: Directory, base: str, domain: str, source: str
    ) -> Status:
        status = await pending
        if status is not Status.UNKNOWN:
            return status
        result = directory.lookup(base, domain, source)
        return await result if inspect.isawaitable(result) else result

    async def start(self) -> None:
        for d in self.directories:
            await d.start()

    async def close(self) -> None:
        for d in self.directories:
            await d.close()


class ResultCache:
    """Answers of a costly source, kept in the `Store` (so several nodes can share them).

    A positive and a negative answer have separate lifetimes; the age of a hit is returned so a
    caller may still use an old positive answer while its source is down.
    """

    def __init__(self, store: Store, prefix: str, positive_ttl: float, negative_ttl: float) -> None:
        self.store = store
        self.prefix = prefix
        self.positive_ttl = positive_ttl
        self.negative_ttl = negative_ttl

    async def get(self, key: str) -> tuple[Status, float] | None:
        value = await self.store.get(self.prefix + key)
        if value is None:
            return None
        kind, _, when = value.partition(":")
        try:
            age = max(0.0, time.time() - float(when))
        except ValueError:
            return None
        return (Status.VALID if kind == "1" else Status.UNKNOWN), age

    async def put(self, key: str, status: Status, keep: float | None = None) -> None:
        """Cache `status` (VALID or UNKNOWN) for its lifetime, or for `keep` seconds if given."""
        if status is Status.UNAVAILABLE:
            return
        valid = status is Status.VALID
        ttl = keep if keep is not None else (self.positive_ttl if valid else self.negative_ttl)
        if ttl > 0:
            await self.store.set(self.prefix + key, f"{int(valid)}:{time.time():.3f}", ttl)


class SingleFlight:
    """Concurrent lookups of one key share one task. The task runs on its own: a session that
    goes away while waiting does not cancel the answer the others wait for. The number of tasks
    is bounded by the number of sessions waiting."""

    def __init__(self) -> None:
        self.tasks: dict[str, asyncio.Task[Status]] = {}

    def pending(self, key: str) -> asyncio.Task[Status] | None:
        return self.tasks.get(key)

    def start(self, key: str, work: Coroutine[Any, Any, Status]) -> asyncio.Task[Status]:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks[key] = task
        task.add_done_callback(lambda _: self.tasks.pop(key, None))
        return task

    def cancel(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
