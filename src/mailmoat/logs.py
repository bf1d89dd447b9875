"""Log lines: one per connection and one per transaction outcome, text or JSON.

Callers give a short event name and flat key/value fields; this module alone decides the format.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from mailmoat.config import LogSettings

log = logging.getLogger("mailmoat")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json
        self._second = -1
        self._when = ""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        second = int(record.created)
        if second != self._second:  # a flood logs thousands of lines a second: format once
            self._second = second
            self._when = self.formatTime(record, "%Y-%m-%dT%H:%M:%S")
        when = self._when
        if self.as_json:
            doc = {"time": when, "level": record.levelname.lower(), "event": record.getMessage()}
            doc.update(fields)
            return json.dumps(doc, default=str, ensure_ascii=False)
        parts = [when, record.levelname.lower(), record.getMessage()]
        parts += [f"{k}={_text(v)}" for k, v in fields.items() if v is not None]
        return " ".join(parts)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    shown = _SHOWN.get(text)
    if shown is None:
        if not text or any(c in text for c in ' "=') or not text.isprintable():
            shown = json.dumps(text, ensure_ascii=False)
        else:
            shown = text
        if len(_SHOWN) >= _SHOWN_MAX:
            _SHOWN.clear()
        _SHOWN[text] = shown
    return shown


_SHOWN: dict[str, str] = {}
"""Values as the text format shows them: a refusal's reply text, its reason and most other
values repeat from line to line, and quoting costs more than a lookup."""
_SHOWN_MAX = 4096


def setup(settings: LogSettings, stream: Any = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Formatter(settings.format == "json"))
    log.handlers[:] = [handler]
    log.setLevel(settings.level.upper())
    log.propagate = False


def enabled(level: int = logging.INFO) -> bool:
    """Whether `event()` at `level` writes anything: check it first when the fields cost
    something to make (an event the level filters out should cost nearly nothing)."""
    return log.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """One line (every refusal writes one, thousands a second under a flood: the record is
    made without `Logger.log`'s search of the stack for the caller, which no line shows)."""
    if log.isEnabledFor(level):
        log.handle(log.makeRecord(log.name, level, "", 0, name, (), None, extra={"fields": fields}))
