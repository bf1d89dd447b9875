"""Postfix's smtp-sink(1) on loopback, dumping every completed transaction to a file.

What the dump can and cannot tell (checked against Postfix 3.7's smtp-sink):
- the envelope exactly as sent: HELO/EHLO argument, the full MAIL and RCPT arguments
  (ESMTP parameters included), the client address and protocol;
- the message after dot-unstuffing, one line per line, every line ending in LF. CRLF and a bare
  LF both become LF and a bare CR inside a line is dropped, so the dump is NOT byte-exact for
  line endings; test those with a raw socket or a Python server.
- A dump file exists from DATA on and stays open until "."; a transaction aborted during DATA
  removes its file. ``messages()`` lists only files smtp-sink no longer holds open.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.host import (
    PeerError,
    make_searchable_tempdir,
    pid_alive,
    require_binary,
    wait_until,
)
from tests.support.ports import LOOPBACK, free_port, is_listening

_ADDR = re.compile(r"<([^>]*)>")


def _address(args: str) -> str:
    """The address inside the first <...> of a MAIL/RCPT argument string."""
    m = _ADDR.search(args)
    return m.group(1) if m else args.split(" ", 1)[0]


@dataclass(frozen=True)
class SinkMessage:
    """One transaction captured by smtp-sink."""

    path: Path
    client_addr: str
    proto: str
    helo: str | None
    mail_args: str
    rcpt_args: tuple[str, ...]
    data: bytes

    @property
    def mail_from(self) -> str:
        """The reverse path without angle brackets ('' for the null sender)."""
        return _address(self.mail_args)

    @property
    def rcpt_to(self) -> list[str]:
        return [_address(a) for a in self.rcpt_args]

    @property
    def data_crlf(self) -> bytes:
        """``data`` with CRLF line ends (what a well-formed client would have sent)."""
        return self.data.replace(b"\n", b"\r\n")

    @classmethod
    def parse(cls, path: Path) -> SinkMessage:
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        fields: dict[str, list[str]] = {}
        i = 0
        while i < len(lines) and not lines[i].startswith(b"Received: "):
            name, _, value = lines[i].decode("utf-8", "replace").partition(": ")
            fields.setdefault(name, []).append(value)
            i += 1
        if i == len(lines):
            raise PeerError(f"{path} is not an smtp-sink dump:\n{raw[:500]!r}")
        i += 1  # "Received: from ..." is followed by exactly two folded lines (by, date)
        for _ in range(2):
            if i < len(lines) and lines[i].startswith(b"\t"):
                i += 1
        body = b"\n".join(lines[i:])
        # smtp-sink ends each dump with one empty line of its own.
        if body.endswith(b"\n"):
            body = body[:-1]
        return cls(
            path=path,
            client_addr=fields.get("X-Client-Addr", [""])[0],
            proto=fields.get("X-Client-Proto", [""])[0],
            helo=fields.get("X-Helo-Args", [None])[0],
            mail_args=fields.get("X-Mail-Args", [""])[0],
            rcpt_args=tuple(fields.get("X-Rcpt-Args", [])),
            data=body,
        )


def _commands(names: Iterable[str]) -> str:
    return ",".join(n.upper() for n in names)


class SmtpSink:
    """smtp-sink on 127.0.0.1:``port``. Construct with options, then ``start()``.

    Options map one to one onto smtp-sink flags (see ``man smtp-sink``): ``lmtp`` -L,
    ``hard_reject`` -f, ``soft_reject`` -r (both take command names such as "RCPT", "DATA",
    "." and imply no PIPELINING), ``disconnect`` -q (drop without reply), ``reply_421`` -Q,
    ``hard_reply`` -B / ``soft_reply`` -b (the reject texts), ``data_delay`` -w (seconds before
    answering DATA), ``abort_after_data`` -A (550 and stop reading, seconds after DATA),
    ``command_delay`` -W ({"RCPT": 2} waits 2 s before answering RCPT); ``extra_args`` for
    anything else. ``dump=False`` keeps no transactions (benchmarks); ``counter`` -c keeps a
    running count of messages that ``count()`` reads.
    """

    def __init__(
        self,
        *,
        lmtp: bool = False,
        hard_reject: Sequence[str] = (),
        soft_reject: Sequence[str] = (),
        disconnect: Sequence[str] = (),
        reply_421: Sequence[str] = (),
        hard_reply: str | None = None,
        soft_reply: str | None = None,
        data_delay: int | None = None,
        abort_after_data: int | None = None,
        command_delay: dict[str, int] | None = None,
        hostname: str = "sink.test",
        backlog: int = 64,
        dump: bool = True,
        counter: bool = False,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        host: str = LOOPBACK,
    ) -> None:
        self.binary = require_binary("smtp-sink", "/usr/sbin/smtp-sink")
        self.host = host
        self.port = port or free_port(host)
        self.base = make_searchable_tempdir("mailmoat-smtp-sink-")
        self.dump_dir = self.base / "dump"
        self.log_path = self.base / "smtp-sink.log"
        opts: list[str] = ["-4", "-h", hostname]
        if counter:
            opts.append("-c")
        if lmtp:
            opts.append("-L")
        for flag, cmds in (
            ("-f", hard_reject),
            ("-r", soft_reject),
            ("-q", disconnect),
            ("-Q", reply_421),
        ):
            if cmds:
                opts += [flag, _commands(cmds)]
        if hard_reply is not None:
            opts += ["-B", hard_reply]
        if soft_reply is not None:
            opts += ["-b", soft_reply]
        if data_delay is not None:
            opts += ["-w", str(data_delay)]
        if abort_after_data is not None:
            opts += ["-A", str(abort_after_data)]
        for cmd, delay in (command_delay or {}).items():
            opts += ["-W", f"{cmd.upper()}:{delay}"]
        self.options = opts + list(extra_args)
        self.backlog = backlog
        self.dump = dump
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def lmtp(self) -> bool:
        return "-L" in self.options

    def argv(self) -> list[str]:
        argv = [self.binary]
        if os.geteuid() == 0:  # smtp-sink refuses to run as root without -u
            argv += ["-u", "nobody"]
        argv += self.options
        if self.dump:
            # The template is strftime-expanded plus ".<random hex>": one file per transaction.
            argv += ["-d", f"{self.dump_dir}/%Y%m%d%H%M%S."]
        return [*argv, f"{self.host}:{self.port}", str(self.backlog)]

    def start(self, timeout: float = 10.0, attempts: int = 3) -> SmtpSink:
        self.dump_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dump_dir, "nobody")
        for _ in range(attempts):
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    self.argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            wait_until(
                lambda: self.proc.poll() is not None or is_listening(self.port, self.host),
                timeout,
                f"smtp-sink on {self.host}:{self.port}",
                describe=self.log_text,
            )
            if self.proc.poll() is None:
                return self
            if "Address already in use" not in self.log_text():
                raise PeerError(f"smtp-sink exited {self.proc.returncode}:\n{self.log_text()}")
            self.port = free_port(self.host)
        raise PeerError(f"smtp-sink could not bind a free port in {attempts} attempts")

    def _open_files(self) -> set[str]:
        if self.proc is None or self.proc.poll() is not None:
            return set()
        fd_dir = f"/proc/{self.proc.pid}/fd"
        names = set()
        try:
            for fd in os.listdir(fd_dir):
                try:
                    names.add(os.readlink(f"{fd_dir}/{fd}"))
                except OSError:
                    continue
        except OSError:
            pass
        return names

    def messages(self) -> list[SinkMessage]:
        """Completed transactions so far, oldest first."""
        if not self.dump_dir.is_dir():
            return []
        open_now = self._open_files()
        done = []
        for p in self.dump_dir.iterdir():
            if str(p) in open_now:
                continue
            try:  # an aborted transaction's file may vanish at any moment
                done.append((p.stat().st_mtime_ns, p.name, SinkMessage.parse(p)))
            except FileNotFoundError:
                continue
        return [m for _, _, m in sorted(done, key=lambda t: t[:2])]

    def wait_for_messages(self, count: int = 1, timeout: float = 10.0) -> list[SinkMessage]:
        """Wait until at least ``count`` transactions are complete; return them all."""
        wait_until(
            lambda: len(self.messages()) >= count,
            timeout,
            f"{count} message(s) at smtp-sink {self.host}:{self.port}",
            describe=self.log_text,
        )
        return self.messages()

    def count(self) -> int:
        """Messages received so far, with ``counter``: smtp-sink's last complete "mesg=N"
        record (each ends in CR) near the end of its output."""
        with open(self.log_path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 512))
            tail = f.read()
        found = re.findall(rb"mesg=(\d+)\r", tail)
        return int(found[-1]) if found else 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "smtp-sink is not running"
        return self.proc.pid

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    @property
    def running(self) -> bool:
        return self.proc is not None and pid_alive(self.proc.pid)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
