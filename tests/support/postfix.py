"""A private Postfix instance on loopback, as a downstream mail server or as a sending client.

See /work/shared/notes/postfix-test-instance.md for why each setting is here. Needs root: the
master starts as root and drops to the ``postfix`` user, and ``postdrop`` checks the caller
before accepting a non-default configuration directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from tests.support.host import (
    PeerError,
    make_searchable_tempdir,
    pid_alive,
    require_binary,
    require_root,
    run_with_tty,
    wait_until,
)
from tests.support.ports import LOOPBACK, free_port, is_listening

DOWNSTREAM = "downstream"
SENDER = "sender"
RELAY = "relay"

# The services a private instance needs; everything runs unchrooted (the instance has no chroot
# tree). Columns: service type private unpriv chroot wakeup maxproc command.
_MASTER_CF_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

# Header lines Postfix's virtual(8) and smtpd(8) put in front of the message as received.
_TRACE_PREFIXES = (b"Return-Path:", b"X-Original-To:", b"Delivered-To:")


@cache
def _package_dirs() -> dict[str, str]:
    postconf = require_binary("postconf", "/usr/sbin/postconf")
    names = ("command_directory", "daemon_directory", "shlib_directory", "meta_directory")
    out = subprocess.run(
        [postconf, "-dh", *names], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    return dict(zip(names, out, strict=True))


@dataclass(frozen=True)
class DeliveredMessage:
    """One file in a downstream user's Maildir, as Postfix stored it (LF line ends)."""

    path: Path
    raw: bytes

    @property
    def content(self) -> bytes:
        """The message as the downstream received it: ``raw`` without the trace headers this
        Postfix added (Return-Path, X-Original-To, Delivered-To and its own Received)."""
        lines = self.raw.splitlines(keepends=True)
        i = 0
        while i < len(lines) and lines[i].startswith(_TRACE_PREFIXES):
            i += 1
        if i < len(lines) and lines[i].startswith(b"Received:"):
            i += 1
            while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
                i += 1
        return b"".join(lines[i:])

    @property
    def content_crlf(self) -> bytes:
        """``content`` with CRLF line ends, comparable with what an SMTP client sent.

        Maildir storage cannot tell CRLF from a bare LF; test bare-LF handling elsewhere.
        """
        return self.content.replace(b"\n", b"\r\n")

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` in ``raw`` (unfolded), or None."""
        wanted = name.lower().encode() + b":"
        lines = self.raw.split(b"\n\n", 1)[0].split(b"\n")
        for i, line in enumerate(lines):
            if line.lower().startswith(wanted):
                value = line[len(wanted) :]
                for cont in lines[i + 1 :]:
                    if cont[:1] not in (b" ", b"\t"):
                        break
                    value += b" " + cont.strip()
                return value.strip().decode("utf-8", "replace")
        return None

    @property
    def envelope_sender(self) -> str | None:
        """MAIL FROM as recorded in Return-Path, without the angle brackets."""
        value = self.header("Return-Path")
        return None if value is None else value.strip("<>")

    @property
    def envelope_recipient(self) -> str | None:
        """The recipient this copy was delivered to (Delivered-To)."""
        return self.header("Delivered-To")


@dataclass
class PostfixInstance:
    """A private Postfix: its own config, queue, data and mail folders under ``base``.

    role "downstream": the internal mail server. Accepts mail for ``users`` only (others get
    550 at RCPT), delivers each into a Maildir readable with ``messages(user)``. Not an open
    relay: ``mynetworks`` is 127.0.0.2/32, so 127.0.0.1 gets no relay rights.

    role "sender": a sending MTA that relays everything to ``relay_to`` (host, port). Inject
    with ``sendmail(...)`` or SMTP to ``port`` from 127.0.0.1 (in its ``mynetworks``);
    ``wait_queue_empty()`` waits until everything has left.

    role "relay": an inbound relay (a gateway in front of an internal server, as mailmoat is):
    accepts mail for ``domain`` from anyone and hands it to ``relay_to``; no relay rights for
    other domains (``mynetworks`` 127.0.0.2/32). The relay benchmark's Postfix (bench/relay.py).
    """

    role: str
    base: Path
    port: int
    domain: str = "example.test"
    users: tuple[str, ...] = ("alice", "bob")
    relay_to: tuple[str, int] | None = None
    relay_protocol: str = "smtp"
    mynetworks: str | None = None
    myhostname: str | None = None
    main_cf: Mapping[str, str] = field(default_factory=dict)
    host: str = LOOPBACK
    running: bool = False

    # ---- layout -------------------------------------------------------------------------

    @property
    def config_dir(self) -> Path:
        return self.base / "etc"

    @property
    def queue_dir(self) -> Path:
        return self.base / "queue"

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def mail_dir(self) -> Path:
        return self.base / "mail"

    @property
    def maillog(self) -> Path:
        return self.base / "maillog"

    @property
    def addresses(self) -> tuple[str, ...]:
        """Full addresses of the downstream's mailboxes."""
        return tuple(u if "@" in u else f"{u}@{self.domain}" for u in self.users)

    # ---- configuration ------------------------------------------------------------------

    def _main_cf(self) -> dict[str, str]:
        dirs = _package_dirs()
        params = {
            "compatibility_level": "3.6",
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            **dirs,
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "maillog_file": str(self.maillog),
            # Postfix refuses a maillog_file outside these prefixes (default: /var, /dev/stdout).
            "maillog_file_prefixes": str(self.base),
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "mydestination": "",
            "alias_maps": "",
            "alias_database": "",
            "local_recipient_maps": "",
            "relay_domains": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
        }
        if self.role == DOWNSTREAM:
            uid, gid = _mailbox_owner()
            domains = sorted({a.rsplit("@", 1)[1] for a in self.addresses})
            params |= {
                "myhostname": self.myhostname or f"mx.{self.domain}",
                "myorigin": "$myhostname",
                "mynetworks": self.mynetworks or "127.0.0.2/32",
                # Keep the received message as sent: no Date/Message-ID/From added for
                # loopback clients (Postfix's default treats them as local submissions).
                "local_header_rewrite_clients": "",
                "virtual_mailbox_domains": " ".join(domains),
                "virtual_mailbox_base": str(self.mail_dir),
                "virtual_mailbox_maps": f"texthash:{self.config_dir / 'vmailbox'}",
                "virtual_uid_maps": f"static:{uid}",
                "virtual_gid_maps": f"static:{gid}",
            }
        elif self.role == SENDER:
            if self.relay_to is None:
                raise ValueError("a sender instance needs relay_to=(host, port)")
            rhost, rport = self.relay_to
            if self.relay_protocol == "smtp":
                transport = "smtp"
            elif self.relay_protocol == "lmtp":
                transport = f"lmtp:inet:[{rhost}]:{rport}"
            else:
                raise ValueError(f"relay_protocol must be smtp or lmtp, not {self.relay_protocol}")
            params |= {
                "myhostname": self.myhostname or "client.sender.test",
                "mydomain": "sender.test",
                "myorigin": "$mydomain",
                "mynetworks": self.mynetworks or "127.0.0.0/8",
                # Everything, bounces included, goes to the one test peer on loopback.
                "relayhost": f"[{rhost}]:{rport}",
                "default_transport": transport,
                "smtp_connect_timeout": "5s",
                # Retry deferred mail quickly so tests can watch a retry happen.
                "queue_run_delay": "1s",
                "minimal_backoff_time": "1s",
                "maximal_backoff_time": "2s",
            }
        elif self.role == RELAY:
            if self.relay_to is None:
                raise ValueError("a relay instance needs relay_to=(host, port)")
            rhost, rport = self.relay_to
            params |= {
                "myhostname": self.myhostname or f"postfix.{self.domain}",
                "mynetworks": self.mynetworks or "127.0.0.2/32",
                "relay_domains": self.domain,
                "transport_maps": f"texthash:{self.config_dir / 'transport'}",
                "relayhost": f"[{rhost}]:{rport}",
            }
        else:
            raise ValueError(
                f"role must be {DOWNSTREAM!r}, {SENDER!r} or {RELAY!r}, not {self.role!r}"
            )
        params |= dict(self.main_cf)
        return params

    def _write_config(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        main = "".join(f"{k} = {v}\n" for k, v in self._main_cf().items())
        (self.config_dir / "main.cf").write_text(main)
        smtpd = f"{self.host}:{self.port} inet  n       -       n       -       -       smtpd\n"
        (self.config_dir / "master.cf").write_text(smtpd + _MASTER_CF_SERVICES)
        if self.role == DOWNSTREAM:
            lines = []
            for address in self.addresses:
                local, domain = address.rsplit("@", 1)
                lines.append(f"{address} {domain}/{local}/\n")
            (self.config_dir / "vmailbox").write_text("".join(lines))
        if self.role == RELAY and self.relay_to is not None:
            rhost, rport = self.relay_to
            (self.config_dir / "transport").write_text(f"{self.domain} relay:[{rhost}]:{rport}\n")
        # Postfix re-reads a configuration file or table, 300 ms at a time, until its mtime is
        # over a second old ("being edited?"): a fresh main.cf costs about 2 s on each start.
        past = time.time() - 10
        for path in self.config_dir.iterdir():
            os.utime(path, (past, past))

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 15.0, attempts: int = 3) -> PostfixInstance:
        """Start and wait until smtpd listens. ``postfix start`` waits for the master's
        initialisation (master -w), so a failed bind already shows as a failed start."""
        postfix = require_binary("postfix", "/usr/sbin/postfix")
        for _ in range(attempts):
            self._prepare_dirs()
            self._write_config()
            rc, out = run_with_tty([postfix, "-c", str(self.config_dir), "start"], timeout)
            if rc == 0:
                self.running = True
                try:
                    wait_until(
                        lambda: is_listening(self.port, self.host),
                        timeout,
                        f"postfix smtpd on {self.host}:{self.port}",
                        describe=self.log_tail,
                    )
                except PeerError:
                    self.stop()
                    raise
                return self
            if "Address already in use" not in out + self.log_text():
                raise PeerError(f"postfix start failed ({rc}):\n{out}\n{self.log_tail()}")
            # Someone took the port between free_port() and the bind: try another one.
            self.port = free_port(self.host)
        raise PeerError(f"postfix could not bind a free port in {attempts} attempts")

    def _prepare_dirs(self) -> None:
        for d in (self.queue_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        # The master opens data_directory/master.lock after dropping to the postfix user.
        shutil.chown(self.data_dir, "postfix")
        if self.role == DOWNSTREAM:
            self.mail_dir.mkdir(exist_ok=True)
            uid, gid = _mailbox_owner()
            os.chown(self.mail_dir, uid, gid)

    def master_pid(self) -> int | None:
        """The pid of this instance's master process, once it runs."""
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _instance_pids(self) -> list[int]:
        """Processes of this instance: Postfix daemons carry MAIL_CONFIG=<our config dir>."""
        marker = f"MAIL_CONFIG={self.config_dir}".encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                environ = Path(f"/proc/{entry}/environ").read_bytes()
            except OSError:
                continue
            if marker in environ.split(b"\0") and pid_alive(int(entry)):
                pids.append(int(entry))
        return pids

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the instance and make sure none of its processes is left (bounded)."""
        if not self.running:
            return
        self.running = False
        master = self.master_pid()
        postfix = shutil.which("postfix") or "/usr/sbin/postfix"
        with contextlib.suppress(PeerError):
            run_with_tty([postfix, "-c", str(self.config_dir), "stop"], timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (master is None or not pid_alive(master)) and not self._instance_pids():
                return
            time.sleep(0.05)
        for pid in self._instance_pids():  # last resort, only our own daemons
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def reconfigure(self, timeout: float = 10.0, **params: str) -> None:
        """Change main.cf parameters and ``postfix reload``.

        Already running smtpd processes keep the old settings for the session they serve.
        """
        self.main_cf = {**self.main_cf, **params}
        self._write_config()
        postfix = require_binary("postfix", "/usr/sbin/postfix")
        rc, out = run_with_tty([postfix, "-c", str(self.config_dir), "reload"], timeout)
        if rc != 0:
            raise PeerError(f"postfix reload failed ({rc}):\n{out}\n{self.log_tail()}")

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    # ---- logs ---------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.maillog.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"--- {self.maillog} (last {len(tail)} lines) ---\n" + "\n".join(tail)

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match[str]:
        """Wait until the maillog matches the regular expression ``pattern``."""
        rx = re.compile(pattern)
        return wait_until(
            lambda: rx.search(self.log_text()),
            timeout,
            f"{pattern!r} in {self.maillog}",
            describe=self.log_tail,
        )

    # ---- downstream: mailboxes ----------------------------------------------------------

    def maildir(self, user: str) -> Path:
        address = user if "@" in user else f"{user}@{self.domain}"
        local, domain = address.rsplit("@", 1)
        return self.mail_dir / domain / local

    def messages(self, user: str) -> list[DeliveredMessage]:
        """Messages delivered to ``user`` so far (new/ and cur/), oldest first."""
        root = self.maildir(user)
        files = [
            p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir()
        ]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.name))
        return [DeliveredMessage(p, p.read_bytes()) for p in files]

    def wait_for_messages(
        self, user: str, count: int = 1, timeout: float = 10.0
    ) -> list[DeliveredMessage]:
        """Wait until ``user`` has at least ``count`` messages; return them all."""
        wait_until(
            lambda: len(self.messages(user)) >= count,
            timeout,
            f"{count} message(s) in the Maildir of {user}",
            describe=self.log_tail,
        )
        return self.messages(user)

    # ---- sender: injection and queue ----------------------------------------------------

    def sendmail(
        self,
        message: bytes,
        recipients: Iterable[str],
        sender: str = "tester@sender.test",
        timeout: float = 30.0,
    ) -> None:
        """Inject ``message`` with this instance's sendmail(1) (-i: a lone dot is data)."""
        binary = require_binary("sendmail", "/usr/sbin/sendmail")
        argv = [binary, "-C", str(self.config_dir), "-i", "-f", sender, "--", *recipients]
        proc = subprocess.run(argv, input=message, capture_output=True, timeout=timeout)
        if proc.returncode != 0:
            raise PeerError(
                f"sendmail exited {proc.returncode}: {proc.stderr.decode(errors='replace')}\n"
                + self.log_tail()
            )

    def queue(self) -> list[dict]:
        """The queue as ``postqueue -j`` reports it: one dict per message."""
        binary = require_binary("postqueue", "/usr/sbin/postqueue")
        proc = subprocess.run(
            [binary, "-c", str(self.config_dir), "-j"], capture_output=True, timeout=30
        )
        if proc.returncode != 0:
            raise PeerError(f"postqueue -j failed: {proc.stderr.decode(errors='replace')}")
        return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def flush(self) -> None:
        """Ask the queue manager to retry deferred mail now (``postqueue -f``)."""
        binary = require_binary("postqueue", "/usr/sbin/postqueue")
        subprocess.run([binary, "-c", str(self.config_dir), "-f"], check=True, timeout=30)

    def wait_queue_empty(self, timeout: float = 10.0) -> None:
        """Wait until every message has left the queue (delivered or bounced)."""

        def describe() -> str:
            return f"queue: {self.queue()}\n{self.log_tail()}"

        wait_until(
            lambda: not self.queue(),
            timeout,
            f"the queue of {self.config_dir} to empty",
            interval=0.1,
            describe=describe,
        )


@cache
def _mailbox_owner() -> tuple[int, int]:
    """uid/gid the virtual delivery agent writes Maildirs as (not root: virtual refuses it)."""
    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def new_instance(role: str, **kwargs) -> PostfixInstance:
    """Create (not start) an instance in a fresh searchable temp folder; needs root."""
    require_binary("postfix", "/usr/sbin/postfix")
    require_root("a private Postfix instance (postfix start, postdrop)")
    port = kwargs.pop("port", None) or free_port()
    base = make_searchable_tempdir(f"mailmoat-postfix-{role}-")
    return PostfixInstance(role=role, base=base, port=port, **kwargs)
