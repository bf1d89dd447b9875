"""An internal error logged with `log.exception` (the connect checks, a delivery, the link
between processes) is one line that names the exception, where it was raised and its text, in
text and JSON: never a bare message, never a traceback over several lines."""

from __future__ import annotations

import io
import json

import pytest

from mailmoat import logs
from mailmoat.config import LogSettings


def _raise() -> None:
    raise KeyError("missing")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_log_exception_is_one_diagnosable_line(fmt: str) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format=fmt), out)
    try:
        try:
            _raise()
        except KeyError:
            logs.log.exception("connect checks failed for %s", "192.0.2.1")
    finally:
        logs.setup(LogSettings())
    (line,) = out.getvalue().splitlines()
    if fmt == "json":
        doc = json.loads(line)
        assert doc["event"] == "connect checks failed for 192.0.2.1"
        assert doc["error"] == "KeyError" and doc["detail"] == "'missing'"
        assert doc["where"].startswith("server/test_log_errors.py:")
        assert doc["where"].endswith(" _raise")
    else:
        assert " error connect checks failed for 192.0.2.1 error=KeyError " in line
        assert 'where="server/test_log_errors.py:' in line and ' _raise" ' in line
        assert line.endswith(" detail='missing'")
