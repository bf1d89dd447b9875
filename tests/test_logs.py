"""The log line format's shortcuts (a time string per second, values rendered once) change
nothing in what is written and stay bounded."""

from __future__ import annotations

import io
import logging
import time

from mailmoat import logs
from mailmoat.config import LogSettings


def _line(out: io.StringIO) -> str:
    return out.getvalue().splitlines()[-1]


def test_each_line_has_its_own_second_and_the_same_values_rendered_alike() -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    formatter = logs.log.handlers[0].formatter
    assert formatter is not None
    shown = []
    for created in (1_000_000_000.25, 1_000_000_000.75, 1_000_000_001.5):
        record = logs.log.makeRecord("mailmoat", logging.INFO, "", 0, "refused", (), None)
        record.created = created
        record.fields = {"reply": "try again later", "client": "192.0.2.1"}  # type: ignore[attr-defined]
        shown.append(formatter.format(record))
    stamps = [time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t)) for t in (1e9, 1e9, 1e9 + 1)]
    for line, stamp in zip(shown, stamps, strict=True):
        assert line == f'{stamp} info refused reply="try again later" client=192.0.2.1'


def test_the_rendered_values_kept_are_bounded() -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    for i in range(3 * logs._SHOWN_MAX):
        logs.event("refused", client=f"198.51.{i // 256}.{i % 256}", reply="a b")
        assert len(logs._SHOWN) <= logs._SHOWN_MAX
    assert _line(out).endswith('client=198.51.47.255 reply="a b"')
