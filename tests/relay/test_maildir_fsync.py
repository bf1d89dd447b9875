"""Invariant 1 for the local Maildir: the 250 comes only after the message file and the new/
directory entry are fsynced. os.fsync is wrapped to record what each call was made on (the
inode behind the descriptor, its size, what new/ held at that moment) and then does the real
fsync, so the test sees the exact file and directory, not just "some fsync happened"."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailmoat.relay.maildir import MaildirDelivery
from tests.relay.relay_support import MessageFactory, SettingsFactory


@dataclass(frozen=True)
class Synced:
    inode: tuple[int, int]
    is_dir: bool
    size: int
    new_entries: tuple[str, ...]
    """What new/ held when a directory was fsynced (empty for a file)."""


class FsyncRecorder:
    def __init__(self, new_dir: Path, fail_on: str | None = None) -> None:
        self.new_dir = new_dir
        self.fail_on = fail_on
        self.calls: list[Synced] = []
        self._real = os.fsync

    def __call__(self, fd: int) -> None:
        st = os.fstat(fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        entries = tuple(sorted(os.listdir(self.new_dir))) if is_dir else ()
        self.calls.append(Synced((st.st_dev, st.st_ino), is_dir, st.st_size, entries))
        if self.fail_on == ("dir" if is_dir else "file"):
            raise OSError(errno.EIO, "injected fsync failure")
        self._real(fd)


def _inode(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_dev, st.st_ino


async def test_file_and_new_directory_are_fsynced_before_the_250(
    make_settings: SettingsFactory, make_message: MessageFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    root = Path(settings.maildir.path)
    md = MaildirDelivery(settings)
    await md.start()
    recorder = FsyncRecorder(root / "new")
    monkeypatch.setattr(os, "fsync", recorder)
    result = await md.deliver(make_message(b"Subject: s\r\n\r\n" + b"x" * 100_000 + b"\r\n"))
    assert result.accepted and result.reply.code == 250
    [delivered] = list((root / "new").iterdir())
    files = [c for c in recorder.calls if not c.is_dir]
    dirs = [c for c in recorder.calls if c.is_dir]
    # the very file that is in new/, fsynced when it was complete (its final size)
    assert [c.inode for c in files] == [_inode(delivered)]
    assert files[0].size == delivered.stat().st_size
    # then new/ itself, fsynced after the rename put the entry there
    assert [c.inode for c in dirs] == [_inode(root / "new")]
    assert delivered.name in dirs[0].new_entries
    assert recorder.calls.index(files[0]) < recorder.calls.index(dirs[0])


@pytest.mark.parametrize("fail_on", ["file", "dir"])
async def test_a_failed_fsync_is_a_451_and_leaves_nothing_in_new(
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    monkeypatch: pytest.MonkeyPatch,
    fail_on: str,
) -> None:
    settings = make_settings()
    root = Path(settings.maildir.path)
    md = MaildirDelivery(settings)
    await md.start()
    monkeypatch.setattr(os, "fsync", FsyncRecorder(root / "new", fail_on))
    result = await md.deliver(make_message(b"Subject: s\r\n\r\nbody\r\n"))
    assert not result.accepted
    assert (result.reply.code, result.reply.enhanced) == (451, "4.3.0")
    assert list((root / "new").iterdir()) == []
    assert list((root / "tmp").iterdir()) == []
