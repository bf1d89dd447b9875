"""Maildir promises that mutation testing (scripts/mutation over relay/maildir.py) found nothing
holding: the directories are made private (0700: other local users cannot even list them), and
a tmp/ that cannot be read is reported as nothing removed."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

from mailmoat.relay import MaildirDelivery
from mailmoat.relay.maildir import _sweep
from tests.relay.relay_support import MessageFactory, SettingsFactory


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, so that a mode bit the code asks for shows in the directory."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


async def test_start_makes_tmp_new_and_cur_private(
    make_settings: SettingsFactory, umask_022: None
) -> None:
    settings = make_settings()
    md = MaildirDelivery(settings)
    await md.start()
    await md.close()
    for sub in ("tmp", "new", "cur"):
        mode = stat.S_IMODE((settings.maildir.path / sub).stat().st_mode)
        assert mode == 0o700, (sub, oct(mode))


async def test_sweeping_a_tmp_that_cannot_be_read_removes_nothing(
    make_settings: SettingsFactory,
) -> None:
    md = MaildirDelivery(make_settings())  # not started: the Maildir does not exist
    assert await md.sweep_tmp() == 0


async def test_a_maildir_that_cannot_be_made_does_not_stop_the_start(
    make_settings: SettingsFactory, make_message: MessageFactory, tmp_path: Path
) -> None:
    """start() logs and goes on; each delivery tries again and answers 451 meanwhile."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    settings = make_settings()
    settings.maildir.path = blocker / "Maildir"  # parent is a file: mkdir fails
    md = MaildirDelivery(settings)
    await md.start()
    result = await md.deliver(make_message())
    await md.close()
    assert (result.accepted, result.reply.code, result.reply.enhanced) == (False, 451, "4.3.0")


@pytest.mark.parametrize("bad", ["\x7f", "\x00", "\x1f", "\t"])
async def test_every_control_character_in_an_address_is_refused(
    make_settings: SettingsFactory, make_message: MessageFactory, bad: str
) -> None:
    settings = make_settings()
    result = await MaildirDelivery(settings).deliver(make_message(rcpts=[f"bo{bad}b@example.net"]))
    assert (result.accepted, result.reply.code) == (False, 451)


async def test_utf8_and_tilde_addresses_are_written(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    settings = make_settings()
    md = MaildirDelivery(settings)
    rcpts = ["jösé@exämple.test", "~tilde@example.test"]
    result = await md.deliver(make_message(mail_from="ñ@example.org", rcpts=rcpts))
    assert result.accepted
    [name] = os.listdir(settings.maildir.path / "new")
    head = (settings.maildir.path / "new" / name).read_bytes()
    assert head.startswith(
        "Return-Path: <ñ@example.org>\nDelivered-To: jösé@exämple.test\n".encode()
    )
    assert b"Delivered-To: ~tilde@example.test\n" in head


async def test_tmp_files_go_at_36_hours_not_before_and_are_counted(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    md = MaildirDelivery(settings)
    await md.start()
    tmp = settings.maildir.path / "tmp"
    now = time.time()
    for name, age in [("older", 36 * 3600 + 20), ("younger", 36 * 3600 - 20), ("old2", 40 * 3600)]:
        (tmp / name).write_bytes(b"partial")
        os.utime(tmp / name, (now - age, now - age))
    assert await md.sweep_tmp() == 2
    await md.close()
    assert os.listdir(tmp) == ["younger"]


async def test_a_space_in_a_quoted_address_is_written(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    settings = make_settings()
    result = await MaildirDelivery(settings).deliver(make_message(rcpts=['"a b"@example.test']))
    assert result.accepted


async def test_a_restart_on_an_existing_maildir_delivers(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    settings = make_settings()
    for _ in range(2):  # the second start finds tmp/, new/ and cur/ there
        md = MaildirDelivery(settings)
        await md.start()
        result = await md.deliver(make_message())
        await md.close()
        assert result.accepted


@pytest.mark.parametrize("off", [100, -5])
@pytest.mark.parametrize("limit", [256 * 1024, 16])
async def test_a_message_read_back_at_another_size_never_reaches_new(
    make_settings: SettingsFactory, make_message: MessageFactory, off: int, limit: int
) -> None:
    """The spool says the message has `off` octets more (or fewer) than it gives back, as a
    truncated temporary file would: 451, and nothing in new/ or tmp/."""
    settings = make_settings()
    msg = make_message(b"Subject: x\r\n\r\n" + b"line\r\n" * 100, memory_limit=limit)
    msg.spool.size += off
    result = await MaildirDelivery(settings).deliver(msg)
    assert (result.accepted, result.reply.code) == (False, 451)
    assert os.listdir(settings.maildir.path / "new") == []
    assert os.listdir(settings.maildir.path / "tmp") == []


STALE = 40 * 3600  # seconds: well past the 36 hours


def _stale_files(tmp: Path, names: list[str]) -> list[str]:
    """Make `names` in `tmp`, all stale; their order as the directory lists them."""
    old = time.time() - STALE
    for name in names:
        (tmp / name).write_bytes(b"partial")
        os.utime(tmp / name, (old, old))
    return os.listdir(tmp)  # the order a scan meets them in (unchanged until we change tmp)


def test_the_sweep_goes_on_past_the_file_of_a_delivery_in_progress(tmp_path: Path) -> None:
    """The busy file is the first one listed: every stale file listed after it goes too."""
    listed = _stale_files(tmp_path, [f"f{i}" for i in range(8)])
    busy = listed[0]
    assert _sweep(tmp_path, frozenset({busy}), 36 * 3600.0) == 7
    assert os.listdir(tmp_path) == [busy]


class _CleanedMeanwhile:
    """Stands in for the busy set, which the sweep asks about each entry as it meets it:
    asking about the first one removes another, as a second cleaner would between the
    listing and the unlink."""

    def __init__(self, first: str, vanish: Path) -> None:
        self.first, self.vanish = first, vanish

    def __contains__(self, name: object) -> bool:
        if name == self.first:
            self.vanish.unlink()
        return False


def test_a_file_another_cleaner_removed_first_is_passed_over(tmp_path: Path) -> None:
    listed = _stale_files(tmp_path, [f"f{i}" for i in range(6)])
    # the vanished file is met in the middle of the scan: the ones after it still go
    vanished = listed[2]
    busy = _CleanedMeanwhile(listed[0], tmp_path / vanished)
    assert _sweep(tmp_path, cast(frozenset[str], busy), 36 * 3600.0) == 5
    assert os.listdir(tmp_path) == []


def test_the_sweep_leaves_symlinks_and_directories(tmp_path: Path) -> None:
    """Only regular files go: a link to an old file elsewhere is neither followed nor removed."""
    tmp, elsewhere = tmp_path / "tmp", tmp_path / "elsewhere"
    tmp.mkdir()
    elsewhere.mkdir()
    _stale_files(elsewhere, ["target"])
    (tmp / "link").symlink_to(elsewhere / "target")
    (tmp / "dir").mkdir()
    old = time.time() - STALE
    os.utime(tmp / "dir", (old, old))
    _stale_files(tmp, ["stale"])
    assert _sweep(tmp, frozenset(), 36 * 3600.0) == 1
    assert sorted(os.listdir(tmp)) == ["dir", "link"]
    assert (elsewhere / "target").exists()
