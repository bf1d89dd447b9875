"""The console's audit log: one JSON line per login and action (who, when, from where, what,
result), appended to console.audit_log, or logged as an event when it is unset.

An action is recorded as an "attempt" before it is made; when that line cannot be written the
action is refused (AuditFailed, a 503), so nothing the console does goes unrecorded."""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from pathlib import Path

from mailmoat import logs


class AuditFailed(Exception):
    """The audit line could not be written (already logged as an error event)."""


class Audit:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, who: str, where: str, what: str, result: str, **detail: object) -> None:
        entry = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "who": who,
            "from": where,
            "what": what,
            "result": result,
            **detail,
        }
        if self.path is None:
            logs.event("console_audit", 20, **entry)
            return
        line = json.dumps(entry, sort_keys=True) + "\n"
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
        except OSError as err:
            logs.event("console_audit_failed", logging.ERROR, path=str(self.path),
                       error=err.strerror or str(err), **entry)  # fmt: skip
            raise AuditFailed(str(err)) from err
