"""Recipients from an LDAP directory (ldap3, blocking calls run in worker threads).

Two modes:

* snapshot (default): every address (the `address_attributes` and `alias_attributes` of the
  entries that `snapshot_filter` finds under `base`) is read with a paged search into an
  in-memory `AddressSet`, refreshed every `refresh` seconds. A lookup never waits for LDAP, and
  a harvest costs the directory nothing.
* lookup: one search per address with `filter` (%s, %u and %d replaced by the escaped address,
  local part and domain), answers cached in the Store: `cache_positive` / `cache_negative`.

The rule during an outage (the last attempt to read the directory failed):

* an address the snapshot (or a cached positive answer) knows stays valid for `max_stale`
  seconds after the last successful read; after that it gets 451 4.4.3 too;
* an address it does not know gets 451 4.4.3, never 550: it may have been added since.

While the directory answers, an address missing from a current snapshot gets 550 5.1.1. A
search that finds no address at all counts as a failure, not as an empty directory. A new
address is therefore refused for at most `refresh` seconds after it is added in snapshot mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ldap3
from ldap3.core.exceptions import LDAPException, LDAPSizeLimitExceededResult
from ldap3.utils.conv import escape_filter_chars

from mailmoat import logs
from mailmoat.config import DirectorySettings, LdapSettings, default_of
from mailmoat.directory.base import (
    AddressSet,
    AddressSetBuilder,
    Directory,
    LookupResult,
    ResultCache,
    SingleFlight,
    Status,
)
from mailmoat.limits import LDAP_PAGE_SIZE as PAGE_SIZE
from mailmoat.store.base import Store

_PLACEHOLDER = re.compile(r"%([sud%])")


class LdapError(Exception):
    """The directory could not be read (connection, bind, search or size problem)."""


def make_filter(template: str, local: str, domain: str) -> str:
    """The search filter for one address, each value escaped (RFC 4515)."""
    values = {
        "s": escape_filter_chars(f"{local}@{domain}"),
        "u": escape_filter_chars(local),
        "d": escape_filter_chars(domain),
        "%": "%",
    }
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


class LdapDirectory(Directory):
    name = "ldap"

    def __init__(
        self,
        settings: LdapSettings,
        store: Store | None = None,
        max_entries: int = default_of(DirectorySettings, "max_entries"),
    ) -> None:
        self.settings = settings
        self.max_entries = max_entries
        self.attributes = [*settings.address_attributes, *settings.alias_attributes]
        self.snapshot: AddressSet | None = None
        self.loaded_at = 0.0
        """time.monotonic() of the last successful snapshot read."""
        self.healthy = False
        """The last attempt to read the directory succeeded."""
        self.refreshes = 0
        self.queries = 0
        self.cache = (
            ResultCache(store, "dir:ldap:", settings.cache_positive, settings.cache_negative)
            if store is not None
            else None
        )
        self._password = settings.bind_password
        self._pool = ThreadPoolExecutor(
            max_workers=settings.connections if settings.mode == "lookup" else 1,
            thread_name_prefix="ldap",
        )
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None
        self._flights = SingleFlight()

    # -- connections (worker threads only) --------------------------------------------------

    def _read_password(self) -> str:
        s = self.settings
        if s.bind_password_file is not None:
            with open(s.bind_password_file, encoding="utf-8") as f:
                return f.readline().rstrip("\r\n")
        return s.bind_password

    def _servers(self) -> list[Any]:
        s = self.settings
        tls = None
        urls = (s.url or "").split()
        if s.starttls or any(u.lower().startswith("ldaps:") for u in urls):
            tls = ldap3.Tls(
                validate=ssl.CERT_REQUIRED if s.tls_verify else ssl.CERT_NONE,
                ca_certs_file=str(s.tls_ca_file) if s.tls_ca_file else None,
                version=ssl.PROTOCOL_TLS_CLIENT,
            )
        return [
            ldap3.Server(u, get_info=ldap3.NONE, connect_timeout=s.timeout, tls=tls) for u in urls
        ]

    def _connect(self) -> Any:
        """A bound connection to the first server that answers (ldap3's ServerPool is not used:
        it sleeps 10 s between rounds, even when told to make only one)."""
        s = self.settings
        problems = []
        for server in self._servers():
            try:
                conn = ldap3.Connection(
                    server,
                    user=s.bind_dn or None,
                    password=self._password if s.bind_dn else None,
                    auto_bind=(
                        ldap3.AUTO_BIND_TLS_BEFORE_BIND if s.starttls else ldap3.AUTO_BIND_NO_TLS
                    ),
                    receive_timeout=max(1, math.ceil(s.timeout)),  # ldap3 wants whole seconds
                    raise_exceptions=True,
                    read_only=True,
                    check_names=False,
                )
            except LDAPException as err:
                problems.append(f"{server.host}:{server.port}: {err}")
                continue
            with self._lock:
                self._connections.append(conn)
            return conn
        raise LdapError("connect/bind: " + "; ".join(problems or ["no server configured"]))

    def _drop(self, conn: Any) -> None:
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        with contextlib.suppress(Exception):
            conn.unbind()

    def _read_all(self) -> AddressSet:
        """Paged search for every recipient entry (runs in a worker thread)."""
        s = self.settings
        conn = self._connect()
        builder = AddressSetBuilder(self.max_entries)
        try:
            entries = conn.extend.standard.paged_search(
                s.base,
                s.snapshot_filter,
                ldap3.SUBTREE,
                attributes=self.attributes,
                paged_size=PAGE_SIZE,
                generator=True,
            )
            for entry in entries:
                if entry.get("type") != "searchResEntry":
                    continue
                attrs = entry.get("attributes", {})
                for name in self.attributes:
                    values = attrs.get(name, [])
                    for value in values if isinstance(values, list) else [values]:
                        if isinstance(value, bytes):
                            value = value.decode("utf-8", "replace")
                        with contextlib.suppress(ValueError):
                            builder.add(str(value))
        except OverflowError as err:
            raise LdapError(f"{err} (directory.max_entries)") from None
        except LDAPException as err:
            raise LdapError(f"search: {err}") from None
        finally:
            self._drop(conn)
        snap = builder.build()
        if not len(snap):
            # A directory that names no recipient at all is a wrong base, filter or bind, not
            # an organisation without mail: refusing everything would be the worse mistake.
            raise LdapError("the snapshot search found no address (check base, filter, bind)")
        return snap

    def _query(self, local: str, domain: str) -> bool:
        """One search for one address on this thread's connection (runs in a worker thread)."""
        s = self.settings
        conn = getattr(self._local, "conn", None)
        for attempt in (1, 2):  # a kept connection may have gone stale: one fresh retry
            if conn is None:
                conn = self._connect()
                self._local.conn = conn
            try:
                conn.search(
                    s.base,
                    make_filter(s.filter, local, domain),
                    ldap3.SUBTREE,
                    attributes=[],
                    size_limit=1,
                )
                return any(r.get("type") == "searchResEntry" for r in conn.response or [])
            except LDAPSizeLimitExceededResult:
                return True
            except LDAPException as err:
                self._drop(conn)
                self._local.conn = conn = None
                if attempt == 2:
                    raise LdapError(f"search: {err}") from None
        raise AssertionError("unreachable")

    # -- snapshot ---------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the whole directory now; True when it worked."""
        loop = asyncio.get_running_loop()
        try:
            snap = await loop.run_in_executor(self._pool, self._read_all)
        except LdapError as err:
            if self.healthy or self.refreshes == 0:
                logs.event(
                    "directory_error",
                    logging.ERROR,
                    source="ldap",
                    error=str(err),
                    snapshot_age=time.monotonic() - self.loaded_at if self.snapshot else None,
                )
            self.healthy = False
            self.refreshes += 1
            return False
        if not self.healthy or self.snapshot is None or len(snap) != len(self.snapshot):
            logs.event("directory_loaded", source="ldap", entries=len(snap))
        self.snapshot = snap
        self.loaded_at = time.monotonic()
        self.healthy = True
        self.refreshes += 1
        return True

    async def _refresh_loop(self) -> None:
        s = self.settings
        while True:
            await asyncio.sleep(s.refresh if self.healthy else min(s.retry, s.refresh))
            await self.refresh()

    def _snapshot_lookup(self, local: str, domain: str) -> Status:
        snap = self.snapshot
        if snap is None:
            return Status.UNAVAILABLE
        if snap.has(local, domain):
            fresh = self.healthy or time.monotonic() - self.loaded_at <= self.settings.max_stale
            return Status.VALID if fresh else Status.UNAVAILABLE
        return Status.UNKNOWN if self.healthy else Status.UNAVAILABLE

    # -- lookup mode ------------------------------------------------------------------------

    async def _live_lookup(self, local: str, domain: str) -> Status:
        key = f"{local}@{domain}"
        assert self.cache is not None
        cached = await self.cache.get(key)
        if cached is not None:
            status, age = cached
            if status is Status.UNKNOWN or age <= self.settings.cache_positive:
                return status
        task = self._flights.pending(key)
        if task is None:
            task = self._flights.start(key, self._ask(local, domain, cached))
        return await asyncio.shield(task)

    async def _ask(self, local: str, domain: str, cached: tuple[Status, float] | None) -> Status:
        loop = asyncio.get_running_loop()
        self.queries += 1
        try:
            found = await loop.run_in_executor(self._pool, self._query, local, domain)
        except LdapError as err:
            if self.healthy:
                logs.event("directory_error", logging.ERROR, source="ldap", error=str(err))
            self.healthy = False
            if cached is not None and cached[1] <= self.settings.cache_positive + (
                self.settings.max_stale
            ):
                return Status.VALID  # a positive answer, still within max_stale
            return Status.UNAVAILABLE
        self.healthy = True
        status = Status.VALID if found else Status.UNKNOWN
        assert self.cache is not None
        keep = self.settings.cache_positive + self.settings.max_stale if found else None
        await self.cache.put(f"{local}@{domain}", status, keep)
        return status

    # -- Directory ---------------------------------------------------------------------------

    def lookup(self, local: str, domain: str, source: str) -> LookupResult:
        if self.settings.mode == "snapshot":
            return self._snapshot_lookup(local, domain)
        return self._live_lookup(local, domain)

    async def start(self) -> None:
        self._password = await asyncio.to_thread(self._read_password)  # OSError: no start
        if self.settings.mode == "lookup":
            if self.cache is None:
                raise ValueError("LDAP lookup mode needs a store for its cache")
            return
        await self.refresh()  # a directory that is down at start-up gives 451s until it is up
        self._task = asyncio.get_running_loop().create_task(self._refresh_loop())

    async def close(self) -> None:
        self._flights.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with self._lock:
            conns = list(self._connections)
        for conn in conns:
            self._drop(conn)
        self._pool.shutdown(wait=False, cancel_futures=True)
