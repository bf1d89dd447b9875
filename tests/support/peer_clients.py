"""Real SMTP clients: swaks and Postfix's smtp-source, run against a loopback port."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import NamedTuple

from tests.support.host import require_binary
from tests.support.ports import LOOPBACK


class SwaksResult(NamedTuple):
    returncode: int
    transcript: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class SourceResult(NamedTuple):
    returncode: int
    output: str


def dot_stuff(content: bytes) -> bytes:
    """RFC 5321 transparency: double a leading dot on every line (CRLF or bare-LF lines)."""
    stuffed = content.replace(b"\n.", b"\n..")
    return b"." + stuffed if stuffed.startswith(b".") else stuffed


def _clean_env() -> dict[str, str]:
    # SWAKS_OPT_* variables would silently change what swaks sends.
    return {k: v for k, v in os.environ.items() if not k.startswith("SWAKS_")}


def swaks(
    port: int,
    *args: str,
    data: bytes | str | None = None,
    raw_data: bytes | None = None,
    host: str = LOOPBACK,
    lmtp: bool = False,
    timeout: float = 30.0,
) -> SwaksResult:
    """Run swaks against host:port; return (exit code, transcript of stdout+stderr).

    ``args`` are ordinary swaks options ("--to", "alice@example.test", "--from", ...).
    ``data`` is the message content: it goes out byte for byte, only dot-stuffed and, if it does
    not already end in CRLF, terminated with one (swaks' own DATA fix-ups are turned off).
    ``raw_data`` is the exact DATA section as it should appear on the wire after the 354,
    including the final ".\\r\\n"; it must end in CRLF (swaks always sends one itself).
    Without either, swaks builds its usual test message. Exit codes (man swaks): 0 ok,
    2 cannot connect, 6 connection closed, 21 banner, 22 HELO, 23 MAIL, 24 no RCPT accepted,
    25 DATA refused, 26 message refused after the final dot.
    No user config (~/.swaksrc) or SWAKS_* variable is read.
    """
    binary = require_binary("swaks", "/usr/bin/swaks")
    if data is not None and raw_data is not None:
        raise ValueError("give data or raw_data, not both")
    argv = [
        binary,
        "--config",
        "--server",
        f"{host}:{port}",
        "--timeout",
        f"{max(1, int(timeout))}",
    ]
    if lmtp:
        argv += ["--protocol", "LMTP"]
    with tempfile.TemporaryDirectory(prefix="mailmoat-swaks-") as tmp:
        wire: bytes | None = None
        if data is not None:
            content = data.encode() if isinstance(data, str) else data
            content = dot_stuff(content)
            if not content.endswith(b"\r\n"):
                content += b"\r\n"
            wire = content + b".\r\n"
        elif raw_data is not None:
            if not raw_data.endswith(b"\r\n"):
                raise ValueError("raw_data must end in CRLF: swaks always sends one at the end")
            wire = raw_data
        if wire is not None:
            path = os.path.join(tmp, "data")
            with open(path, "wb") as f:
                f.write(wire[:-2])  # with --no-data-fixup swaks sends the file, then CRLF
            argv += ["--no-data-fixup", "--data", f"@{path}"]
        proc = subprocess.run(
            [*argv, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_clean_env(),
            timeout=timeout + 15,
        )
    return SwaksResult(proc.returncode, proc.stdout.decode("utf-8", "replace"))


def smtp_source(
    port: int,
    *,
    sender: str = "source@sender.test",
    to: str = "alice@example.test",
    messages: int = 1,
    sessions: int = 1,
    recipients: int = 1,
    size: int | None = None,
    helo: str = "smtp-source.test",
    lmtp: bool = False,
    keep_going: bool = False,
    extra_args: Sequence[str] = (),
    host: str = LOOPBACK,
    timeout: float = 60.0,
) -> SourceResult:
    """Run smtp-source against host:port; return (exit code, output).

    ``messages`` in total over ``sessions`` parallel sessions, ``recipients`` per transaction
    (beyond one, smtp-source prefixes a number to ``to``: "1alice@..."), ``size`` bytes of
    body. By default it stops at the first unexpected reply with exit code 1; ``keep_going`` (-A)
    carries on instead. Add "-d" to ``extra_args`` to reuse one connection for several messages.
    """
    binary = require_binary("smtp-source", "/usr/sbin/smtp-source")
    argv = [binary, "-4", "-M", helo, "-f", sender, "-t", to]
    argv += ["-m", str(messages), "-s", str(sessions), "-r", str(recipients)]
    if size is not None:
        argv += ["-l", str(size)]
    if lmtp:
        argv.append("-L")
    if keep_going:
        argv.append("-A")
    argv += [*extra_args, f"{host}:{port}"]
    proc = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout,
    )
    return SourceResult(proc.returncode, proc.stdout.decode("utf-8", "replace"))
