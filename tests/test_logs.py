"""The log line format's shortcuts (a time string per second, values rendered once) change
nothing in what is written and stay bounded."""

from __future__ import annotations

import io
import json
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


def test_an_event_is_written_without_a_log_record_and_reads_as_one_would() -> None:
    """The direct path (only setup's handler): no LogRecord made, the very line the record
    path writes. With another handler beside it (a test's, a library's) the record goes the
    usual way and both get it."""
    made = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        made.append(args)
        return factory(*args, **kwargs)

    fields = {"client": "192.0.2.7", "reply": "try again later", "code": 421, "none": None}
    for fmt in ("text", "json"):
        out = io.StringIO()
        logs.setup(LogSettings(format=fmt), out)
        logging.setLogRecordFactory(counting)
        try:
            logs.event("refused", **fields)
            assert made == [], "no LogRecord on the direct path"
            direct = _line(out)
            beside = _Keep()
            logs.log.addHandler(beside)
            try:
                logs.event("refused", **fields)
            finally:
                logs.log.removeHandler(beside)
            assert len(made) == 1 and len(beside.records) == 1, "the usual way, both handlers"
            assert _untimed(_line(out)) == _untimed(direct), "the same line either way"
            logs.event("refused", logging.DEBUG, **fields)  # below the level: nothing
            assert out.getvalue().count("refused") == 2
        finally:
            logging.setLogRecordFactory(factory)
            made.clear()
    assert json.loads(direct)["client"] == "192.0.2.7"


def _untimed(line: str) -> str:
    """A line without its time (two lines written a moment apart may fall in two seconds)."""
    if line.startswith("{"):
        return json.dumps({k: v for k, v in json.loads(line).items() if k != "time"})
    return line.split(" ", 1)[1]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
