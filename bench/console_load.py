"""The relay benchmark's "mailmoat-console" system: mailmoat with the web console on, and an
administrator's client fetching one of its pages every REFRESH_EVERY seconds (ten times what
the overview's own refresh asks; MAILMOAT_BENCH_CONSOLE_PAUSE=0: back to back) for the whole
run. Against "mailmoat" in the same run it shows what the console costs the SMTP path (issue
14: it runs in its own thread and loop, so it should be noise)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from tests.support.console import PASSWORD, USER, Browserless
from tests.support.ports import free_port
from tests.support.smtp_sink import SmtpSink

from bench.relay import HOST, Mailmoat, wait_for
from mailmoat.console import users

PAGES = ("/", "/transactions", "/bans", "/offenders")
REFRESH_EVERY = float(os.environ.get("MAILMOAT_BENCH_CONSOLE_PAUSE", "1.0"))


class ConsoleMailmoat(Mailmoat):
    def __init__(self, workdir: Path, sink: SmtpSink) -> None:
        super().__init__(workdir, sink, "mailmoat-console")
        self.console_port = free_port()
        self.pages = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._refresh, daemon=True)

    def settings(self) -> dict[str, object]:
        users_file = self.dir / "console-users"
        users.add(users_file, USER, PASSWORD)
        return super().settings() | {
            "console.listen": f"{HOST}:{self.console_port}",
            "console.users_file": str(users_file),
            "console.audit_log": str(self.dir / "audit.jsonl"),
        }

    def start(self) -> None:
        super().start()
        client = Browserless(self.console_port)
        wait_for(lambda: _answers(client), 30, "the console to answer")
        self._thread.start()

    def _refresh(self) -> None:
        client = Browserless(self.console_port)
        client.login()
        while not self._stop.is_set():
            for page in PAGES:
                try:
                    ok = client.request("GET", page)[0] == 200
                except OSError:
                    ok = False
                self.pages += ok
                self.errors += not ok
                if self._stop.wait(REFRESH_EVERY):
                    return

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.notes.append(
            f"the console served {self.pages:,} pages, one every {REFRESH_EVERY:g} s"
            f" ({self.errors} failed): {', '.join(PAGES)}"
        )
        super().stop()


def _answers(client: Browserless) -> bool:
    try:
        return client.request("GET", "/login")[0] == 200
    except OSError:
        return False
