"""Log lines: one per connection and one per transaction outcome, text or JSON.

Callers give a short event name and flat key/value fields; this module alone decides the format.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any

from mailmoat.config import LogSettings
from mailmoat.limits import LOG_VALUES_SHOWN as _SHOWN_MAX

log = logging.getLogger("mailmoat")


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json
        self._second = -1
        self._when = ""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        if record.exc_info and record.exc_info[1] is not None:
            # log.exception(): the error in one line (never a traceback across lines)
            fields = {**fields, **failure(record.exc_info[1])}
        return self.line(record.created, record.levelname, record.getMessage(), fields)

    def line(self, created: float, level: str, name: str, fields: dict[str, Any]) -> str:
        second = int(created)
        if second != self._second:  # a flood logs thousands of lines a second: format once
            self._second = second
            self._when = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(created))
        when = self._when
        if self.as_json:
            doc = {"time": when, "level": level.lower(), "event": name}
            doc.update(fields)
            return _printable(json.dumps(doc, default=str, ensure_ascii=False))
        parts = [when, level.lower(), name]
        parts += [f"{k}={_text(v)}" for k, v in fields.items() if v is not None]
        return " ".join(parts)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler `setup` installs; `write` takes a line `event` formatted itself."""

    formatter: _Formatter

    def write(self, text: str) -> None:
        try:
            with self.lock or contextlib.nullcontext():
                self.stream.write(text + self.terminator)
                self.stream.flush()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": text}))


_handler: _Handler | None = None
"""The handler `setup` installed; while it is the logger's only one (no test's or library's
beside it), `event` writes to it directly."""


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)
    text = str(value)
    shown = _SHOWN.get(text)
    if shown is None:
        if not text or any(c in text for c in ' "=') or not text.isprintable():
            shown = _printable(json.dumps(text, ensure_ascii=False))
        else:
            shown = text
        if len(_SHOWN) >= _SHOWN_MAX:
            _SHOWN.clear()
        _SHOWN[text] = shown
    return shown


_SHOWN: dict[str, str] = {}
"""Values as the text format shows them: a refusal's reply text, its reason and most other
values repeat from line to line, and quoting costs more than a lookup."""


def _escape(c: str) -> str:
    code = ord(c)
    if code > 0xFFFF:  # a JSON escape is UTF-16: a surrogate pair
        code -= 0x10000
        return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"
    return f"\\u{code:04x}"


def _printable(quoted: str) -> str:
    """A JSON text with every character that is not printable escaped (\\u2028, \\x85, DEL and
    the like, which json.dumps leaves as they are): a value can never break a log line, so
    no client-chosen text can start a line of its own and pass for a record of mailmoat's.
    json.dumps has already escaped quotes, backslashes and C0 controls."""
    if quoted.isprintable():
        return quoted
    return "".join(c if c.isprintable() else _escape(c) for c in quoted)


def failure(exc: BaseException) -> dict[str, str]:
    """Log fields that make an internal error diagnosable in one line: the exception's type,
    where it was raised, the innermost frame of mailmoat's own code on the way (`via`, when
    that is another place) and its text, cut short."""
    inner = ours = None
    tb = exc.__traceback__
    while tb is not None:  # iterative: a RecursionError's traceback is deep
        inner = tb.tb_frame.f_code, tb.tb_lineno
        if "/mailmoat/" in inner[0].co_filename:
            ours = inner
        tb = tb.tb_next
    fields = {"error": type(exc).__name__, "where": _frame(inner)}
    if ours is not None and ours != inner:
        fields["via"] = _frame(ours)
    fields["detail"] = str(exc)[:200]
    return fields


def _frame(frame: tuple[Any, int] | None) -> str:
    if frame is None:
        return ""
    code, line = frame
    parts = code.co_filename.split("/")
    cut = len(parts) - 1 - parts[::-1].index("mailmoat") if "mailmoat" in parts else -2
    return f"{'/'.join(parts[cut:])}:{line} {code.co_name}"


def setup(settings: LogSettings, stream: Any = None) -> None:
    global _handler
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(_Formatter(settings.format == "json"))
    _handler = handler
    log.handlers[:] = [handler]
    log.setLevel(settings.level.upper())
    log.propagate = False


def enabled(level: int = logging.INFO) -> bool:
    """Whether `event()` at `level` writes anything: check it first when the fields cost
    something to make (an event the level filters out should cost nearly nothing)."""
    return log.isEnabledFor(level)


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """One line. Every refusal and every connection writes one, thousands a second under a
    flood: with only `setup`'s handler in place (no filter, no other handler) the line is
    formatted and written at once, without the `LogRecord` (its thread, process and time
    lookups) and the handler chain, which cost more than the line itself; otherwise the
    record goes the usual way (made without `Logger.log`'s search of the stack)."""
    if not log.isEnabledFor(level):
        return
    handler = _handler
    handlers = log.handlers
    if (
        handler is not None
        and len(handlers) == 1
        and handlers[0] is handler
        and not log.filters
        and not handler.filters
    ):
        level_name = logging.getLevelName(level)
        handler.write(handler.formatter.line(time.time(), level_name, name, fields))
        return
    log.handle(log.makeRecord(log.name, level, "", 0, name, (), None, extra={"fields": fields}))
