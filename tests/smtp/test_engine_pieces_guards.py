"""Edges of the engine's pieces (smtp/readers.py, data.py, ...) that mutation testing
(scripts/mutation) found no fixed test holding: the command after an over-long line whose end
comes first in the next read is kept."""

from __future__ import annotations

import pytest

from mailmoat.smtp.events import Rejected
from mailmoat.smtp.readers import CommandLineReader
from mailmoat.smtp.writers import R_SYNTAX_LINE


@pytest.mark.parametrize("rest", [b"\n", b"\r\n", b"xx\r\n"])
def test_the_command_after_an_over_long_line_is_kept_whatever_the_read_holds(rest: bytes) -> None:
    """The end of the dropped line may be the very first octet of the next read."""
    lines = CommandLineReader(512)
    buf = bytearray(b"X" * 600)
    assert lines(buf) == Rejected("line_too_long", R_SYNTAX_LINE)
    assert lines.skipping and not buf
    buf.extend(rest + b"NOOP\r\nQUIT\r\n")
    assert lines(buf) == b"NOOP\r\n"
    assert lines(buf) == b"QUIT\r\n"
    assert lines(buf) is None and not lines.skipping
