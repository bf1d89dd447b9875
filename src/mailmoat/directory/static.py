"""A static file of valid recipients, reloaded when it changes.

One entry per line; `#` starts a comment (at the start of a line or after a space):

    alice@example.org                       a valid address
    sales@example.org  alice@example.org    an alias: the first address is valid (the targets
                                            that follow are for the reader and are checked to
                                            be addresses; the internal server does the aliasing)
    @example.net                            a catch-all: every address in example.net is valid

A file that cannot be read or has a bad line is refused whole: at start-up the gateway does not
start, later the last good version stays in force (and the problem is logged). A change is
loaded once the file has looked the same on two checks in a row, so a file caught half-written
is not loaded; replacing it atomically (write a new file, rename it over) is still best. A file
without a single address is refused too: it would refuse every recipient.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

from mailmoat import logs
from mailmoat.config import DirectorySettings, default_of
from mailmoat.directory.base import AddressSet, AddressSetBuilder, Directory, LookupResult, Status
from mailmoat.limits import STATIC_FILE_MAX_LINE as MAX_LINE


class StaticFileError(Exception):
    """The file cannot be used; the message says where and why."""


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)


def parse(path: Path, max_entries: int) -> AddressSet:
    """Read the whole file into an AddressSet; StaticFileError on the first problem."""
    builder = AddressSetBuilder(max_entries)
    try:
        with open(path, encoding="utf-8") as f:
            lineno = 0
            while True:
                line = f.readline(MAX_LINE + 1)
                if not line:
                    break
                lineno += 1
                if len(line) > MAX_LINE:
                    raise StaticFileError(f"{path}:{lineno}: line longer than {MAX_LINE}")
                text = line if not line.startswith("#") else ""
                cut = text.find(" #"), text.find("\t#")
                cut_at = min((c for c in cut if c >= 0), default=-1)
                if cut_at >= 0:
                    text = text[:cut_at]
                fields = text.replace(",", " ").split()
                if not fields:
                    continue
                try:
                    builder.add(fields[0])
                    for target in fields[1:]:
                        AddressSetBuilder(1).add(target)  # checked, not kept
                except ValueError as err:
                    raise StaticFileError(f"{path}:{lineno}: {err}") from None
                except OverflowError as err:
                    raise StaticFileError(f"{path}: {err} (directory.max_entries)") from None
    except OSError as err:
        raise StaticFileError(f"{path}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise StaticFileError(f"{path}: not UTF-8 ({err.reason})") from None
    snap = builder.build()
    if not len(snap):
        raise StaticFileError(f"{path}: no address in the file")
    return snap


class StaticDirectory(Directory):
    name = "static"

    def __init__(
        self,
        path: Path,
        check_interval: float = default_of(DirectorySettings, "static_check_interval"),
        max_entries: int = default_of(DirectorySettings, "max_entries"),
    ):
        self.path = path
        self.check_interval = check_interval
        self.max_entries = max_entries
        self.snapshot: AddressSet | None = None
        self.loads = 0
        self._loaded_sig: tuple[int, int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def lookup(self, local: str, domain: str, source: str) -> LookupResult:
        snap = self.snapshot
        if snap is None:
            return Status.UNAVAILABLE
        return Status.VALID if snap.has(local, domain) else Status.UNKNOWN

    async def load(self) -> None:
        """Read the file now; StaticFileError leaves the current snapshot as it is."""
        sig = _signature(self.path)
        snap = await asyncio.to_thread(parse, self.path, self.max_entries)
        self.snapshot = snap
        self._loaded_sig = sig
        self.loads += 1
        logs.event("directory_loaded", source="static", path=str(self.path), entries=len(snap))

    async def start(self) -> None:
        await self.load()
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        seen = self._loaded_sig
        failed: tuple[int, int, int, int] | None = None
        while True:
            await asyncio.sleep(self.check_interval)
            sig = _signature(self.path)
            if sig is None or sig == self._loaded_sig:
                seen = sig
                continue
            if sig != seen:  # changed since the last look: wait until it stays put
                seen = sig
                continue
            if sig == failed:
                continue
            try:
                await self.load()
            except StaticFileError as err:
                failed = sig
                logs.event(
                    "directory_error",
                    logging.ERROR,
                    source="static",
                    error=str(err),
                    action="keeping the last good version",
                )
