"""Maildir promises that mutation testing (scripts/mutation over relay/maildir.py) found nothing
holding: the directories are made private (0700: other local users cannot even list them), and
a tmp/ that cannot be read is reported as nothing removed."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

import pytest

from mailmoat.relay import MaildirDelivery
from tests.relay.relay_support import SettingsFactory


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
