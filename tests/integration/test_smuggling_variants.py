"""SMTP smuggling end to end for every fake end of data that the engine-level list holds
(tests/smtp/test_smuggling_variants.py) and tests/integration/test_smuggling.py does not:
the same attack, the same real Postfix downstream that would be fooled, the same checks, in
both bare_line_endings modes, each variant a fixed case."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration import test_smuggling as base
from tests.smtp.test_smuggling_variants import FAKE_ENDS

pytestmark = pytest.mark.peers

MORE = [end for end in FAKE_ENDS if end not in base.FAKE_ENDS]


def test_the_engine_list_adds_variants() -> None:
    assert b"\r\n.\n" in MORE and b"\r\n.\r" in MORE and b"\r\n.\x00\r\n" in MORE


@pytest.mark.parametrize("fake_end", MORE, ids=repr)
def test_smuggling_rejected(tmp_path: Path, postfix_downstream, fake_end: bytes) -> None:
    base.test_smuggling_rejected(tmp_path, postfix_downstream, fake_end)


@pytest.mark.parametrize("fake_end", MORE, ids=repr)
def test_smuggling_normalised(tmp_path: Path, postfix_downstream, fake_end: bytes) -> None:
    base.test_smuggling_normalised(tmp_path, postfix_downstream, fake_end)
