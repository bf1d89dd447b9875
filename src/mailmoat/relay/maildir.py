"""Local delivery into a Maildir (the default when no downstream server is configured).

Invariant 1 for the local case: the 250 is given only after the file is complete, fsynced, renamed
from tmp/ into new/ and the new/ directory entry is fsynced. A crash at any earlier moment leaves
at most a partial file in tmp/, never one in new/ (Maildir readers look only in new/ and cur/).

All file work runs in a worker thread (`asyncio.to_thread`), so the event loop never waits on disk.

Files left in tmp/ by a crash are removed once older than TMP_MAX_AGE (the Maildir convention's
36 hours), at start and every SWEEP_EVERY seconds; the file of a delivery in progress never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from mailmoat.config import Settings
from mailmoat.limits import MAILDIR_SWEEP_EVERY as SWEEP_EVERY
from mailmoat.limits import MAILDIR_TMP_MAX_AGE as TMP_MAX_AGE
from mailmoat.message import Message, in_thread
from mailmoat.relay.base import DeliveryResult
from mailmoat.relay.capabilities import EVERYTHING, Capabilities
from mailmoat.smtp.replies import reply

log = logging.getLogger("mailmoat.relay.maildir")

_SUBDIRS = ("tmp", "new", "cur")


def _safe_host(name: str) -> str:
    """Host part of a Maildir file name: '/' and ':' encoded as the Maildir spec asks."""
    return name.replace("/", "\\057").replace(":", "\\072") or "localhost"


def _header_address(address: str) -> bytes:
    """An envelope address for a header line; refuses anything that could break the line."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        raise ValueError("control character in envelope address")
    return address.encode("utf-8")


def delivery_headers(message: Message) -> bytes:
    """`Return-Path:` and one `Delivered-To:` per recipient."""
    env = message.envelope
    out = [b"Return-Path: <" + _header_address(env.mail_from) + b">\r\n"]
    out += [b"Delivered-To: " + _header_address(r) + b"\r\n" for r in env.rcpt_to]
    return b"".join(out)


class MaildirDelivery:
    """`Delivery` into `settings.maildir.path`: tmp/ -> fsync -> new/ -> fsync(new/)."""

    def __init__(self, settings: Settings, sweep_every: float = SWEEP_EVERY) -> None:
        self.path = Path(settings.maildir.path)
        self._host = _safe_host(settings.server.hostname)
        self._pid = os.getpid()
        self._counter = 0
        self._ready = False
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self._writing: set[str] = set()
        """Names of the files in tmp/ that deliveries in progress are writing."""

    @property
    def capabilities(self) -> Capabilities:
        """A file takes any message: SMTPUTF8, 8BITMIME, no size limit of its own."""
        return EVERYTHING

    async def learn(self) -> None:
        return None

    async def start(self) -> None:
        """Create tmp/, new/ and cur/ (mode 0700) if missing; clean tmp/ now and periodically."""
        try:
            await self._prepare()
        except OSError as err:  # each delivery will try again, and answer 451 meanwhile
            log.error("maildir %s: %s", self.path, err.strerror or err)
        await self.sweep_tmp()
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _prepare(self) -> None:
        await asyncio.to_thread(self._make_dirs)
        self._ready = True

    async def sweep_tmp(self) -> int:
        """Remove the files in tmp/ older than TMP_MAX_AGE, but not those being written.
        Returns how many were removed."""
        busy = frozenset(self._writing)
        try:
            removed = await asyncio.to_thread(_sweep, self.path / "tmp", busy, TMP_MAX_AGE)
        except OSError as err:
            log.warning("maildir %s: cannot clean tmp/: %s", self.path, err.strerror or err)
            return 0
        if removed:
            log.info("maildir %s: removed %d stale file(s) from tmp/", self.path, removed)
        return removed

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_every)
            await self.sweep_tmp()

    def _make_dirs(self) -> None:
        for sub in _SUBDIRS:
            (self.path / sub).mkdir(mode=0o700, parents=True, exist_ok=True)

    def _unique_name(self) -> str:
        # time.pid_random.hostname (Maildir spec): seconds, then M<usec> P<pid> R<random> Q<count>
        now = time.time()
        self._counter += 1
        sec, usec = int(now), int((now % 1) * 1_000_000)
        rnd = secrets.token_hex(8)
        return f"{sec}.M{usec}P{self._pid}R{rnd}Q{self._counter}.{self._host}"

    async def deliver(self, message: Message) -> DeliveryResult:
        try:
            head = delivery_headers(message)
        except ValueError as err:
            log.error("queue %s: refusing to write maildir file: %s", message.queue_id, err)
            return DeliveryResult(
                reply(451, "4.3.0", "Local delivery failed, try again later"), False, str(err)
            )
        name = self._unique_name()
        self._writing.add(name)
        try:
            if not self._ready:
                await self._prepare()
            await in_thread(self._write, name, head, message)
        except (OSError, ValueError) as err:  # ValueError: the spool was closed (a bug)
            detail = f"maildir {self.path}: {getattr(err, 'strerror', None) or err}"
            log.error("queue %s: %s", message.queue_id, detail)
            return DeliveryResult(
                reply(451, "4.3.0", "Local delivery failed, try again later"), False, detail
            )
        finally:
            self._writing.discard(name)
        return DeliveryResult(
            reply(250, "2.0.0", f"Ok: queued as {message.queue_id}"),
            True,
            f"maildir new/{name}",
        )

    def _write(self, name: str, head: bytes, message: Message) -> None:
        """Runs in a worker thread. Raises OSError; never leaves a file in new/ unless complete."""
        tmp = self.path / "tmp" / name
        new = self.path / "new" / name
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            try:
                content = _Counted(message.chunks())
                for chunk in _lf_lines(head, content):
                    _write_all(fd, chunk)
                if content.size != message.size:  # never a truncated message in new/
                    raise OSError(
                        errno.EIO, f"message read back as {content.size} of {message.size} octets"
                    )
                os.fsync(fd)
            finally:
                os.close(fd)
            if new.exists():  # name clash is practically impossible; never overwrite
                raise FileExistsError(errno.EEXIST, "maildir name already in new/", str(new))
            os.rename(tmp, new)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        try:
            _fsync_dir(self.path / "new")
        except OSError:
            # The entry may not survive a crash and the client will be told 451 and retry:
            # take the file back out so that the retry does not make a duplicate.
            with contextlib.suppress(OSError):
                os.unlink(new)
            raise

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None


def _sweep(tmp: Path, busy: frozenset[str], max_age: float) -> int:
    """Runs in a worker thread: unlink the regular files in `tmp` not modified for `max_age`
    seconds, except those named in `busy`."""
    cutoff = time.time() - max_age
    removed = 0
    with os.scandir(tmp) as entries:
        for entry in entries:
            if entry.name in busy:
                continue
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # another process cleaned it first
                continue
    return removed


class _Counted:
    """The message's chunks, counting the octets that went by."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self.size = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.size += len(chunk)
            yield chunk


def _lf_lines(head: bytes, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The file as Maildir readers expect it: LF line ends (the message has CRLF only, so a
    CR held back at the end of one chunk is always followed by the LF of the next)."""
    carry = b""
    for chunk in itertools.chain((head,), chunks):
        data = carry + chunk
        carry = b"\r" if data.endswith(b"\r") else b""
        yield data[: len(data) - len(carry)].replace(b"\r\n", b"\n")
    yield carry


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
