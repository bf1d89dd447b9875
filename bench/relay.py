"""Relay throughput: mailmoat against Haraka and Postfix, with smtp-sink as the ceiling.

    python -m bench relay                 # the full matrix (about 11 minutes on 2 cores)
    python -m bench relay --quick         # 10 KiB x 20 sessions x 1 recipient, one repeat
    python -m bench.relay --systems direct,mailmoat --repeats 5 --messages 2000

What it does, in one run:
- installs what is missing: Postfix (smtp-source, smtp-sink, postfix) and dnsmasq with apt-get,
  Haraka from npm into ~/.cache/mailmoat-bench/haraka-VERSION (reused), matplotlib with pip;
- starts one smtp-sink on loopback (the downstream of every system) and each system on its own
  loopback port, all accepting mail for example.test and forwarding it to that sink:
    direct          smtp-source straight into the sink (the ceiling);
    mailmoat        `python -m mailmoat serve` from this worktree, default settings (log.level
                    warning); its DNS checks (on by default) ask a private dnsmasq on loopback
                    in which the sending client passes FCrDNS, HELO, SPF and DMARC;
    mailmoat-nodns  the same with dns.checks = false: what the DNS checks cost;
    mailmoat-console (only when asked for) the web console on, a page fetched every second
                    (bench/console_load.py): what the console costs the SMTP path;
    haraka          Haraka, plugins rcpt_to.in_host_list + queue/smtp_forward, log level WARN,
                    nodes=1;
    postfix         a private Postfix instance relaying example.test to the sink (after-queue);
- drives each with smtp-source over the matrix (message size x sessions x recipients), the
  systems alternating within each point and their order rotating from point to point, every
  point repeated;
- checks that the sink received exactly the messages sent (a run where it did not is invalid and
  reported as such), and times each transaction with a small Python client at one session;
- prints the tables and writes bench/results/relay.md, relay.json and relay.png.

`--profile SECONDS` instead profiles mailmoat with py-spy under 10 KiB x 20 sessions x 1 rcpt and
writes bench/results/relay-profile.md (top functions) and relay-profile.txt (raw stacks).

Worker policy: each system runs as it comes. mailmoat's default is one worker process per core
under a supervisor (`server.workers = 0`: 2 workers on 2 cores); Haraka's is nodes=1 (a cluster
master and one worker); Postfix runs its own process-per-session model with default process
limits. Two more columns show each on the other footing: mailmoat as one process
(`server.workers = 1`, "mailmoat-1p") and Haraka with one worker per core ("haraka-2n",
nodes=2). CPU and memory are counted over each system's whole process tree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.host import PeerError
from tests.support.ports import free_port, is_listening
from tests.support.postfix import RELAY, new_instance
from tests.support.redis import RedisServer
from tests.support.smtp_sink import SmtpSink

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
HOST = "127.0.0.1"
DOMAIN = "example.test"
SENDER = "bench@sender.test"
RECIPIENT = f"rcpt@{DOMAIN}"
HELO = "client.sender.test"
SYSTEMS = ("direct", "mailmoat", "mailmoat-1p", "mailmoat-nodns", "haraka", "haraka-2n", "postfix")
# mailmoat-1p: one process (server.workers = 1); mailmoat-nodns: DNS checks off (dns.checks =
# false), to show what they cost; haraka-2n: Haraka with nodes=2 (a worker per core)
EXTRA_SYSTEMS: tuple[str, ...] = ("mailmoat-dir", "mailmoat-redis", "mailmoat-console")
# not in the default matrix (`--systems mailmoat-nodns,mailmoat-dir,mailmoat-redis`): the cost
# of a recipient directory (harvest windows in the store) with the memory and the Redis store,
# each with DNS checks off as mailmoat-nodns
# mailmoat-console: the web console on, its pages fetched back to back (bench/console_load.py)
LABELS = {
    "direct": "direct",
    "mailmoat": "mailmoat",
    "mailmoat-1p": "mailmoat, one process",
    "mailmoat-nodns": "mailmoat, DNS checks off",
    "mailmoat-dir": "mailmoat, static directory, memory store",
    "mailmoat-redis": "mailmoat, static directory, Redis store",
    "mailmoat-console": "mailmoat, console refreshing",
    "haraka": "Haraka",
    "haraka-2n": "Haraka, nodes=2",
    "postfix": "Postfix",
}
SIZES = (1024, 10240, 102400)
SESSIONS = (1, 20, 100)
RCPTS = (1, 5)
HARAKA_VERSION = "3.3.4"
DIRECT_FACTOR = 4
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mailmoat-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The load comes from one client address (127.0.0.1), which an Internet-facing default treats
# as one very busy sender. Where a system limits connections per client address by default,
# the limit is raised above the benchmark's 100 sessions (the check still runs) and the change
# is listed in the results. Applied only to settings that exist in the mailmoat under test.
MAILMOAT_ONE_CLIENT = {
    "admission.max_per_ip": 1000,
    "admission.max_per_network": 1000,
    "admission.max_rate": 0,
}
POSTFIX_ONE_CLIENT = {"smtpd_client_connection_count_limit": "1000"}


class BenchError(RuntimeError):
    """A system did not start, stop or answer as expected."""


# --- installation ---------------------------------------------------------------------------


def _run(argv: Sequence[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), timeout=timeout, check=False, **kw)


def tool(name: str) -> str | None:
    for path in (f"/usr/sbin/{name}", f"/usr/bin/{name}", shutil.which(name)):
        if path and os.access(path, os.X_OK):
            return path
    return None


def ensure_postfix() -> None:
    if all(tool(n) for n in ("smtp-source", "smtp-sink", "postfix", "postconf")):
        return
    if os.geteuid() != 0:
        raise BenchError("Postfix is missing: apt-get install postfix (needs root)")
    print("installing postfix (smtp-source, smtp-sink) with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Installing the package must not start (or enable) the system instance on port 25.
    policy = Path("/usr/sbin/policy-rc.d")
    added = not policy.exists()
    if added:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        if shutil.which("debconf-set-selections"):  # no main.cf, no questions
            sel = "postfix postfix/main_mailer_type select No configuration\n"
            _run(["debconf-set-selections"], 60, input=sel.encode())
        _run(["apt-get", "update", "-q"], 600, env=env)
        done = _run(["apt-get", "install", "-y", "-q", "postfix"], 900, env=env)
    finally:
        if added:
            policy.unlink(missing_ok=True)
    if done.returncode != 0 or not tool("smtp-source"):
        raise BenchError("apt-get install postfix failed")


def haraka_dir(version: str) -> Path:
    return CACHE / f"haraka-{version}"


def ensure_haraka(version: str) -> Path:
    """Haraka from npm into the cache folder (reused when present); returns its bin/haraka."""
    base = haraka_dir(version)
    script = base / "node_modules" / "Haraka" / "bin" / "haraka"
    if script.exists():
        return script
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        raise BenchError("Haraka needs Node.js and npm (apt-get install nodejs npm)")
    print(f"installing Haraka {version} from npm into {base} ...", flush=True)
    base.mkdir(parents=True, exist_ok=True)
    done = _run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(base), f"Haraka@{version}"],
        900,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not script.exists():
        raise BenchError(f"npm install Haraka@{version} failed:\n{done.stderr[-2000:]}")
    return script


def ensure_matplotlib() -> bool:
    try:
        import matplotlib
    except ImportError:
        print("installing matplotlib with pip (the chart) ...", flush=True)
        _run([sys.executable, "-m", "pip", "install", "-q", "matplotlib"], 900)
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            return False
    return True


# --- processes --------------------------------------------------------------------------------


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def process_tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                children.setdefault(int(st[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if alive(pid):
            out.append(pid)
            todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime+stime of each process plus cutime+cstime (its reaped children), in seconds."""
    ticks = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            ticks += sum(int(x) for x in st[11:15])
    return ticks / CLK_TCK


def reset_peak_rss(pids: Iterable[int]) -> None:
    for pid in pids:  # "5" resets VmHWM to the current RSS (Linux >= 4.0; needs privileges)
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def peak_rss(pids: Iterable[int]) -> int:
    """Sum of VmHWM over the processes, in bytes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) * 1024
    return total


def pss(pids: Iterable[int]) -> int:
    """Sum of the proportional set size (shared pages split between their users), in bytes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # our own session (start_new_session=True)
        proc.wait(5)


# --- the sink ---------------------------------------------------------------------------------


def counting_sink() -> SmtpSink:
    """smtp-sink on loopback that keeps no message, only a running count (``count()``)."""
    return SmtpSink(dump=False, counter=True, backlog=1024, extra_args=("-m", "2000", "-t", "60"))


# --- DNS for mailmoat's checks -----------------------------------------------------------------


def ensure_dnsmasq() -> str:
    exe = tool("dnsmasq")
    if exe:
        return exe
    if os.geteuid() != 0:
        raise BenchError("dnsmasq is missing: apt-get install dnsmasq-base (needs root)")
    print("installing dnsmasq-base with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    _run(["apt-get", "install", "-y", "-q", "dnsmasq-base"], 900, env=env)
    exe = tool("dnsmasq")
    if not exe:
        raise BenchError("apt-get install dnsmasq-base failed")
    return exe


def dns_answers(port: int) -> bool:
    """True if a DNS server on HOST:port answers a query (any answer)."""
    query = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        try:
            s.sendto(query, (HOST, port))
            return s.recv(512)[:2] == b"\x12\x34"
        except OSError:
            return False


class SenderDns:
    """A private dnsmasq on loopback serving the sending side's DNS: the client 127.0.0.1 is
    client.sender.test both ways (FCrDNS and HELO pass), sender.test publishes SPF for it and
    DMARC p=none. Everything else under .test and in-addr.arpa is NXDOMAIN; no upstream."""

    RECORDS = (
        f"host-record={HELO},{HOST}",
        f'txt-record={SENDER.split("@")[1]},"v=spf1 ip4:{HOST} -all"',
        f'txt-record=_dmarc.{SENDER.split("@")[1]},"v=DMARC1; p=none"',
    )

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "dns"
        self.dir.mkdir()
        self.log = self.dir / "dnsmasq.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> None:
        binary = ensure_dnsmasq()
        for _ in range(5):
            self.port = free_port()
            conf = self.dir / "dnsmasq.conf"
            lines = [
                f"port={self.port}",
                f"listen-address={HOST}",
                "bind-interfaces",
                "no-resolv",
                "no-hosts",
                "no-poll",
                "log-queries",
                "log-facility=-",
                "local-ttl=3600",
                "local=/test/",
                "local=/in-addr.arpa/",
                *self.RECORDS,
            ]
            conf.write_text("\n".join(lines) + "\n")
            argv = [binary, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file="]
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if dns_answers(self.port):
                    return
                time.sleep(0.05)
            stop_process(self.proc)
        raise BenchError(f"dnsmasq did not start:\n{_log_tail(self.log)}")

    def queries(self) -> int:
        try:
            return self.log.read_text(errors="replace").count("query[")
        except OSError:
            return 0

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)


# --- the systems under test -------------------------------------------------------------------


@dataclass
class System:
    name: str
    port: int = 0
    notes: list[str] = field(default_factory=list)
    after_queue: bool = False  # accepts before delivering: the sink lags behind smtp-source

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def root_pid(self) -> int:
        raise NotImplementedError

    def pids(self) -> list[int]:
        return process_tree(self.root_pid())

    def log_tail(self) -> str:
        return ""


class Direct(System):
    def __init__(self, sink: SmtpSink) -> None:
        super().__init__("direct", sink.port)
        self.sink = sink
        self.notes.append("smtp-source straight into smtp-sink; CPU and RSS are the sink's")

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def root_pid(self) -> int:
        return self.sink.pid


def _log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return f"--- {path} ---\n" + "\n".join(text)


def _mailmoat_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": src + (os.pathsep + path if path else "")}


def _toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class Mailmoat(System):
    def __init__(
        self,
        workdir: Path,
        sink: SmtpSink,
        name: str = "mailmoat",
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(name, free_port())
        self.dir = workdir / name
        self.dir.mkdir()
        self.sink = sink
        self.extra = dict(extra or {})
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "mailmoat.log"
        self.dns: SenderDns | None = None
        self.admin = free_port()
        self.worker_calls: int | None = None  # store calls over the workers' links, from /stats
        self.redis_gauges: dict[str, int] = {}  # the Redis store's calls, from /stats

    def settings(self) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-m", "mailmoat", "config", "defaults"],
            capture_output=True,
            text=True,
            env=_mailmoat_env(),
            timeout=60,
            check=True,
        ).stdout
        known, section = set(), ""
        for line in out.splitlines():
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
            elif " = " in line:  # "# name = (unset)": a setting without a default
                known.add(f"{section}.{line.removeprefix('# ').split(' = ', 1)[0].strip()}")
        values: dict[str, object] = {
            "server.listen": [f"{HOST}:{self.port}"],
            "admin.listen": f"{HOST}:{self.admin}",
            "domains.local": [DOMAIN],
            "relay.downstream": f"{HOST}:{self.sink.port}",
            "log.level": "warning",
        }
        unknown = sorted(set(self.extra) - known)
        if unknown:
            raise BenchError(f"mailmoat has no setting {', '.join(unknown)}")
        if self.extra:
            self.notes.append(", ".join(f"{k} = {_toml_value(v)}" for k, v in self.extra.items()))
        if "dns.nameservers" in known and self.extra.get("dns.checks") is not False:
            self.dns = SenderDns(self.dir)
            self.dns.start()
            values["dns.nameservers"] = [f"{HOST}:{self.dns.port}"]
            self.notes.append(
                "DNS checks (on by default) ask a private dnsmasq on loopback in which the client"
                f" passes: {HELO} <-> {HOST} (FCrDNS, HELO), SPF pass and DMARC p=none for"
                " sender.test (mailmoat's own DNS cache at its default)"
            )
        raised = {k: v for k, v in MAILMOAT_ONE_CLIENT.items() if k in known}
        if raised:
            self.notes.append(
                "one client address: " + ", ".join(f"{k} = {v}" for k, v in raised.items())
            )
        return values | raised | self.extra

    def start(self) -> None:
        sections: dict[str, list[str]] = {}
        for key, value in self.settings().items():
            head, name = key.split(".", 1)
            sections.setdefault(head, []).append(f"{name} = {_toml_value(value)}")
        conf = self.dir / "mailmoat.toml"
        conf.write_text("".join(f"[{h}]\n" + "\n".join(v) + "\n\n" for h, v in sections.items()))
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailmoat", "serve", "--config", str(conf)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=_mailmoat_env(),
                start_new_session=True,
                cwd=self.dir,
            )
        try:
            wait_for(self._ready, 30, "mailmoat to listen")
        except BenchError as err:
            raise BenchError(f"{err}\n{self.log_tail()}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"mailmoat exited with {self.proc.returncode}\n{self.log_tail()}")
        return is_listening(self.port, HOST)

    def stop(self) -> None:
        if self.proc is not None:
            self.worker_calls = worker_calls(self.admin)
            self.redis_gauges = redis_gauges(self.admin)
            stop_process(self.proc)
        if self.dns is not None:
            queries = self.dns.queries()
            self.notes.append(f"{queries:,} DNS queries reached dnsmasq during the whole run")
            self.dns.stop()

    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        return _log_tail(self.log)


class Haraka(System):
    def __init__(
        self, workdir: Path, sink: SmtpSink, script: Path, name: str = "haraka", nodes: int = 1
    ) -> None:
        super().__init__(name, free_port())
        self.dir = workdir / name
        self.sink = sink
        self.script = script
        self.nodes = nodes
        self.proc: subprocess.Popen | None = None
        self.log = workdir / f"{name}.log"
        self.notes.append(
            f"plugins rcpt_to.in_host_list + queue/smtp_forward; nodes={nodes}; log level WARN"
        )

    def start(self) -> None:
        node = shutil.which("node") or "node"
        done = _run([node, str(self.script), "-i", str(self.dir)], 60, capture_output=True)
        if done.returncode != 0:
            raise BenchError(f"haraka -i failed: {done.stderr.decode(errors='replace')}")
        cfg = self.dir / "config"
        (cfg / "smtp.ini").write_text(f"listen={HOST}:{self.port}\nnodes={self.nodes}\n")
        (cfg / "log.ini").write_text("[main]\nlevel=warn\ntimestamps=false\nformat=default\n")
        (cfg / "plugins").write_text("rcpt_to.in_host_list\nqueue/smtp_forward\n")
        (cfg / "host_list").write_text(f"{DOMAIN}\n")
        (cfg / "smtp_forward.ini").write_text(
            f"host={HOST}\nport={self.sink.port}\nenable_outbound=false\n"
        )
        (cfg / "me").write_text("haraka.example.test\n")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [node, str(self.script), "-c", str(self.dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.dir,
            )
        try:
            wait_for(self._ready, 60, "Haraka to listen")
        except BenchError as err:
            raise BenchError(f"{err}\n{self.log_tail()}") from None

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"Haraka exited with {self.proc.returncode}\n{self.log_tail()}")
        return is_listening(self.port, HOST)

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self) -> str:
        return _log_tail(self.log)


class Postfix(System):
    """A private Postfix relaying example.test to the sink: tests/support/postfix.py's "relay"
    role."""

    def __init__(self, sink: SmtpSink) -> None:
        self.instance = new_instance(
            RELAY, relay_to=(HOST, sink.port), domain=DOMAIN, main_cf=POSTFIX_ONE_CLIENT
        )
        super().__init__("postfix", self.instance.port, after_queue=True)
        self.notes.append(
            "private instance relaying example.test to the sink (relay_domains, transport_maps);"
            " after-queue: msg/s is its accept rate, end-to-end shown separately; logs every"
            " message at info to a file (Postfix has no warning-only level)"
        )
        self.notes.append(
            "one client address: "
            + ", ".join(f"{k} = {v}" for k, v in POSTFIX_ONE_CLIENT.items())
            + " (default 50)"
        )

    def start(self) -> None:
        try:
            self.instance.start(timeout=60)
        except PeerError as err:
            raise BenchError(str(err)) from None
        self.port = self.instance.port

    def root_pid(self) -> int:
        pid = self.instance.master_pid()
        assert pid is not None, "postfix is not running"
        return pid

    def stop(self) -> None:
        self.instance.cleanup()

    def log_tail(self) -> str:
        return self.instance.log_tail()


class MailmoatStore(Mailmoat):
    """mailmoat-nodns with a static directory of the bench's recipient, on the memory store or
    on a private redis-server (tests/support/redis.py), whose FCALLs are counted."""

    def __init__(self, workdir: Path, sink: SmtpSink, name: str) -> None:
        users = workdir / f"{name}-recipients"
        users.write_text(RECIPIENT + "\n")
        extra: dict[str, object] = {
            "dns.checks": False,
            "directory.default": "static",
            "directory.static_file": str(users),
        }
        self.redis: RedisServer | None = None
        if name == "mailmoat-redis":
            self.redis = RedisServer(workdir / "redis")
            extra |= {"store.backend": "redis", "store.url": self.redis.url}
        super().__init__(workdir, sink, name, extra)
        self.store_calls = 0

    def start(self) -> None:
        if self.redis is not None:
            self.redis.start()
        super().start()

    def stop(self) -> None:
        super().stop()
        if self.redis is not None:
            self.store_calls = fcalls(self.redis.port)
            self.redis.shutdown()


def worker_calls(port: int) -> int | None:
    """The `store.worker_calls` counter of a running mailmoat's /stats (None: unreadable)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as answer:
            doc = json.loads(answer.read())
    except (OSError, ValueError):
        return None
    return int(doc.get("counters", {}).get("store.worker_calls", 0))


def redis_gauges(port: int) -> dict[str, int]:
    """The `store.redis.*` gauges of a running mailmoat's /stats (empty: none, or unreadable)."""
    try:
        with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as answer:
            doc = json.loads(answer.read())
    except (OSError, ValueError):
        return {}
    gauges = doc.get("gauges", {})
    return {
        k[len("store.redis.") :]: int(v) for k, v in gauges.items() if k.startswith("store.redis.")
    }


def store_ops(gauges: dict[str, int], sent: int) -> str:
    """The Redis store's calls per message, by function, and its round trips: what a message
    costs the supervisor (each pipelined batch of calls is one round trip)."""
    calls = {k[len("calls.") :]: v for k, v in gauges.items() if k.startswith("calls.") and v}
    each = ", ".join(f"{fn} {n / sent:.2f}" for fn, n in sorted(calls.items()))
    trips = gauges.get("round_trips", 0)
    return f"per message: {each or 'no call'}; {trips / sent:.2f} round trips (heartbeats included)"


def fcalls(port: int) -> int:
    """FCALLs a redis-server has run (INFO commandstats)."""
    with socket.create_connection((HOST, port), timeout=5) as s:
        s.sendall(b"INFO commandstats\r\n")
        data = b""
        while b"\r\n\r\n" not in data[-4:] and len(data) < 1 << 20:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"cmdstat_fcall:" in data and data.endswith(b"\r\n"):
                break
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("cmdstat_fcall:"):
            return int(line.split("calls=", 1)[1].split(",", 1)[0])
    return 0


# --- load -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    size: int
    sessions: int
    rcpts: int

    @property
    def label(self) -> str:
        return f"{self.size // 1024} KiB x {self.sessions} x {self.rcpts}"


@dataclass
class Run:
    system: str
    point: Point
    repeat: int
    messages: int
    seconds: float = 0.0  # smtp-source wall time
    end_to_end: float = 0.0  # until the sink had every message
    cpu: float = 0.0
    rss: int = 0  # sum of per-process peaks (VmHWM) over the tree
    pss: int = 0  # sum of PSS over the tree at the end of the run
    problem: str = ""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0

    @property
    def e2e_rate(self) -> float:
        return self.messages / self.end_to_end if self.end_to_end else 0.0


def messages_for(size: int, sessions: int, base: int, system: str = "") -> int:
    """``base`` for 1 and 10 KiB, a third for 100 KiB; a quarter of that at 1 session (where
    Haraka takes about 50 ms a message); at least 5 a session. Direct runs send DIRECT_FACTOR
    times more, so that they last long enough to time (1,000 messages take 0.1 s)."""
    n = base if size <= 10240 else base // 3
    if sessions == 1:
        n //= 4
    if system == "direct":
        n *= DIRECT_FACTOR
    return max(n, 5 * sessions, 1)


def smtp_source(port: int, point: Point, messages: int, timeout: float) -> tuple[int, str, float]:
    argv = [
        tool("smtp-source") or "smtp-source",
        "-s",
        str(point.sessions),
        "-m",
        str(messages),
        "-l",
        str(point.size),
        "-r",
        str(point.rcpts),
        "-f",
        SENDER,
        "-t",
        RECIPIENT,
        "-M",
        HELO,
        f"{HOST}:{port}",
    ]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, f"smtp-source did not finish in {timeout:g} s", time.perf_counter() - t0
    return done.returncode, done.stderr.decode(errors="replace").strip(), time.perf_counter() - t0


def measure(system: System, sink: SmtpSink, run: Run, drain_timeout: float) -> Run:
    """One smtp-source run against one system, with CPU, peak RSS and the sink's count."""
    before = sink.count()
    pids = system.pids()
    reset_peak_rss(pids)
    cpu0 = cpu_seconds(pids)
    t0 = time.perf_counter()
    rc, err, run.seconds = smtp_source(
        system.port, run.point, run.messages, timeout=30 + run.messages * 0.1
    )
    expected = before + run.messages
    with contextlib.suppress(BenchError):  # a short count is reported below
        wait_for(lambda: sink.count() >= expected, drain_timeout, "the sink", interval=0.01)
    run.end_to_end = time.perf_counter() - t0
    pids = system.pids()
    run.cpu = cpu_seconds(pids) - cpu0
    run.rss = peak_rss(pids)
    run.pss = pss(pids)
    time.sleep(0.05)
    got = sink.count() - before
    if rc != 0:
        run.problem = f"smtp-source exit {rc}: {err[-300:]}"
    elif got != run.messages:
        run.problem = f"the sink got {got} of {run.messages} messages"
    if run.problem:
        run.problem += "\n" + system.log_tail()
    return run


def make_message(size: int) -> bytes:
    head = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench\r\n"
        f"Message-Id: <bench.{size}@{HELO}>\r\n\r\n"
    ).encode()
    line = b"X" * 78 + b"\r\n"
    body = line * (size // len(line)) + b"X" * max(0, size % len(line) - 2) + b"\r\n"
    return head + body


def _reply(f, want: bytes) -> None:
    while True:
        line = f.readline(1024)
        if not line:
            raise BenchError(f"connection closed, wanted {want.decode()}")
        if line[3:4] != b"-":
            break
    if not line.startswith(want):
        raise BenchError(f"wanted {want.decode()}, got {line.decode(errors='replace').strip()}")


def timed_transactions(port: int, n: int, size: int, rcpts: int) -> list[float]:
    """``n`` messages one after another, one connection each; for each, the seconds from
    connect() to the 250 after the end of data (the QUIT that follows is not timed)."""
    message = make_message(size) + b".\r\n"
    envelope = [f"MAIL FROM:<{SENDER}>\r\n".encode()]
    # the recipients smtp-source -r sends: rcpt@, 1rcpt@, 2rcpt@, ...
    envelope += [f"RCPT TO:<{i or ''}{RECIPIENT}>\r\n".encode() for i in range(rcpts)]
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with socket.create_connection((HOST, port), timeout=30) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = s.makefile("rb")
            _reply(f, b"220")
            s.sendall(f"EHLO {HELO}\r\n".encode())
            _reply(f, b"250")
            for cmd in envelope:
                s.sendall(cmd)
                _reply(f, b"250")
            s.sendall(b"DATA\r\n")
            _reply(f, b"354")
            s.sendall(message)
            _reply(f, b"250")
            out.append(time.perf_counter() - t0)
            s.sendall(b"QUIT\r\n")
            _reply(f, b"221")
    return out


@dataclass
class LatencyRun:
    system: str
    size: int
    rcpts: int
    repeat: int
    samples: list[float] = field(default_factory=list)
    problem: str = ""


def measure_latency(system: System, sink: SmtpSink, lat: LatencyRun, n: int) -> LatencyRun:
    before = sink.count()
    try:
        lat.samples = timed_transactions(system.port, n, lat.size, lat.rcpts)
    except (OSError, BenchError) as err:
        lat.problem = f"{type(err).__name__}: {err}"
    with contextlib.suppress(BenchError):
        wait_for(lambda: sink.count() >= before + n, 30 + n * 0.05, "the sink", interval=0.01)
    time.sleep(0.05)
    got = sink.count() - before
    if not lat.problem and got != n:
        lat.problem = f"the sink got {got} of {n} messages"
    if lat.problem:
        lat.problem += "\n" + system.log_tail()
    return lat


# --- report -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def _num(v: float | None, digits: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{digits}f}"


def _ratio(v: float | None, ref: float | None) -> str:
    if not v or not ref:
        return ""
    return f" ({v / ref:.2f}x)"


@dataclass
class Summary:
    rate: dict[tuple[Point, str], float] = field(default_factory=dict)
    e2e: dict[tuple[Point, str], float] = field(default_factory=dict)
    cpu: dict[tuple[Point, str], float] = field(default_factory=dict)
    rss: dict[tuple[Point, str], int] = field(default_factory=dict)
    pss: dict[tuple[Point, str], int] = field(default_factory=dict)
    valid: dict[tuple[Point, str], tuple[int, int]] = field(default_factory=dict)
    lat: dict[tuple[int, int, str], tuple[float, float, int]] = field(default_factory=dict)


def summarise(runs: list[Run], lats: list[LatencyRun]) -> Summary:
    s = Summary()
    keys = {(r.point, r.system) for r in runs}
    for key in keys:
        all_runs = [r for r in runs if (r.point, r.system) == key]
        good = [r for r in all_runs if not r.problem]
        s.valid[key] = (len(good), len(all_runs))
        if good:
            s.rate[key] = statistics.median(r.rate for r in good)
            s.e2e[key] = statistics.median(r.e2e_rate for r in good)
            s.cpu[key] = statistics.median(r.cpu / r.messages * 1000 for r in good)
            s.rss[key] = max(r.rss for r in good)
            s.pss[key] = max(r.pss for r in good)
    for key in {(x.size, x.rcpts, x.system) for x in lats}:
        good = [x for x in lats if (x.size, x.rcpts, x.system) == key and not x.problem]
        samples = [v for x in good for v in x.samples]
        if samples:
            s.lat[key] = (percentile(samples, 0.5), percentile(samples, 0.99), len(samples))
    return s


def tables(s: Summary, points: list[Point], systems: list[str], sizes: list[int]) -> str:
    out = []
    ref = next((x for x in ("mailmoat", "mailmoat-nodns") if x in systems), None)
    head = ["size x sessions x rcpts"] + [f"{LABELS[x]} msg/s" for x in systems]
    if "postfix" in systems:
        head.append("Postfix end-to-end msg/s")
    out.append("| " + " | ".join(head) + " |")
    out.append("|---" + "|---:" * (len(head) - 1) + "|")
    for p in points:
        base = s.rate.get((p, ref)) if ref else None
        cells = [p.label]
        for x in systems:
            v = s.rate.get((p, x))
            good, total = s.valid.get((p, x), (0, 0))
            cell = _num(v) + ("" if x == ref else _ratio(v, base))
            if total and good < total:
                cell += f" [{total - good} of {total} invalid]"
            cells.append(cell)
        if "postfix" in systems:
            v = s.e2e.get((p, "postfix"))
            cells.append(_num(v) + _ratio(v, base))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out.append(
        "CPU seconds per 1,000 messages / peak RSS / PSS, MiB (over the process tree: RSS is"
        " the sum of each process's peak, PSS is taken at the end of the run and splits shared"
        " pages; they differ for multi-process Postfix and Haraka):"
    )
    out.append("")
    head = ["size x sessions x rcpts"] + [LABELS[x] for x in systems]
    out.append("| " + " | ".join(head) + " |")
    out.append("|---" + "|---:" * (len(head) - 1) + "|")
    for p in points:
        cells = [p.label]
        for x in systems:
            cpu, rss, ps = s.cpu.get((p, x)), s.rss.get((p, x)), s.pss.get((p, x))
            mib = [_num(v / 2**20 if v else None, 0) for v in (rss, ps)]
            cells.append(f"{_num(cpu, 2)} / {mib[0]} / {mib[1]}")
        out.append("| " + " | ".join(cells) + " |")
    if s.lat:
        out.append("")
        out.append(
            "Latency per message at 1 session, Python client (connect to the 250 after the end"
            " of data), ms: p50 / p99, and added versus direct:"
        )
        out.append("")
        head = ["size x rcpts"] + [LABELS[x] for x in systems if x != "direct"]
        if "direct" in systems:
            head.insert(1, "direct")
        out.append("| " + " | ".join(head) + " |")
        out.append("|---" + "|---:" * (len(head) - 1) + "|")
        for size in sizes:
            for rc in RCPTS:
                d = s.lat.get((size, rc, "direct"))
                if not any((size, rc, x) in s.lat for x in systems):
                    continue
                cells = [f"{size // 1024} KiB x {rc}"]
                if "direct" in systems:
                    cells.append(f"{_num(d[0] * 1e3, 2)} / {_num(d[1] * 1e3, 2)}" if d else "-")
                for x in systems:
                    if x == "direct":
                        continue
                    v = s.lat.get((size, rc, x))
                    if not v:
                        cells.append("-")
                        continue
                    cell = f"{v[0] * 1e3:.2f} / {v[1] * 1e3:.2f}"
                    if d:
                        cell += f" (+{(v[0] - d[0]) * 1e3:.2f} / +{(v[1] - d[1]) * 1e3:.2f})"
                    cells.append(cell)
                out.append("| " + " | ".join(cells) + " |")
        one = [p for p in points if p.sessions == 1]
        if one and "direct" in systems:
            out.append("")
            out.append(
                "Added mean time per message at 1 session from smtp-source's wall time"
                " (system minus direct), ms:"
            )
            out.append("")
            head = ["size x rcpts"] + [LABELS[x] for x in systems if x != "direct"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|---" + "|---:" * (len(head) - 1) + "|")
            for p in one:
                d = s.rate.get((p, "direct"))
                cells = [f"{p.size // 1024} KiB x {p.rcpts}"]
                for x in systems:
                    if x == "direct":
                        continue
                    v = s.rate.get((p, x))
                    cells.append(f"+{1e3 / v - 1e3 / d:.2f}" if v and d else "-")
                out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def targets(s: Summary, system: str = "mailmoat") -> list[tuple[str, bool | None, str]]:
    """Issue 6's targets for ``system`` (mailmoat with its defaults; mailmoat-nodns for
    reference)."""
    p = Point(10240, 20, 1)
    mm, hk, d = (s.rate.get((p, x)) for x in (system, "haraka", "direct"))
    lat_mm, lat_d = s.lat.get((10240, 1, system)), s.lat.get((10240, 1, "direct"))
    name = "mailmoat" if system == "mailmoat" else LABELS[system]
    out: list[tuple[str, bool | None, str]] = []
    if mm and hk:
        out.append((f"10 KiB x 20: {name} >= 3x Haraka", mm >= 3 * hk, f"{mm / hk:.2f}x"))
    hk2 = s.rate.get((p, "haraka-2n"))
    if mm and hk2:
        ratio = f"{mm / hk2:.2f}x"
        out.append((f"10 KiB x 20: {name} >= 3x Haraka with nodes=2", mm >= 3 * hk2, ratio))
    if mm and d:
        out.append((f"10 KiB x 20: {name} >= 30% of direct", mm >= 0.3 * d, f"{mm / d:.0%}"))
    if lat_mm and lat_d:
        added = (lat_mm[0] - lat_d[0]) * 1e3
        out.append(
            (f"10 KiB x 1 session: {name}, added p50 < 1 ms", added < 1.0, f"{added:.2f} ms")
        )
    return out


def chart(s: Summary, points: list[Point], systems: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "direct": "#999999",
        "mailmoat": "#1f77b4",
        "mailmoat-1p": "#17becf",
        "mailmoat-nodns": "#aec7e8",
        "mailmoat-dir": "#9467bd",
        "mailmoat-redis": "#c5b0d5",
        "mailmoat-console": "#8c564b",
        "haraka": "#d62728",
        "haraka-2n": "#ff9896",
        "postfix": "#2ca02c",
    }
    fig = plt.figure(figsize=(15, 9), constrained_layout=True)
    grid = fig.add_gridspec(2, 2, height_ratios=[3, 2])
    ax = fig.add_subplot(grid[0, :])
    width = 0.8 / max(1, len(systems))
    for i, x in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(points))]
        ys = [s.rate.get((p, x), 0) for p in points]
        ax.bar(xs, ys, width, label=LABELS[x] + (" (accept)" if x == "postfix" else ""),
               color=colours[x])  # fmt: skip
    ax.set_yscale("log")
    ax.set_xticks(range(len(points)), [p.label for p in points], rotation=30, ha="right")
    ax.set_ylabel("messages/s (median, log scale)")
    ax.set_title("Relay throughput: size x concurrent sessions x recipients, into smtp-sink")
    ax.grid(axis="y", which="both", alpha=0.3)
    ax.legend()

    ax2 = fig.add_subplot(grid[1, 0])
    sel = [p for p in points if p.sessions == 20 and p.rcpts == 1] or points[:3]
    for i, x in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(sel))]
        ax2.bar(xs, [s.cpu.get((p, x), 0) for p in sel], width, color=colours[x],
                label=LABELS[x])  # fmt: skip
    ax2.set_xticks(range(len(sel)), [p.label for p in sel])
    ax2.set_ylabel("CPU seconds per 1,000 messages")
    ax2.set_title("CPU cost (direct: the sink itself)")
    ax2.grid(axis="y", alpha=0.3)

    ax3 = fig.add_subplot(grid[1, 1])
    sizes = sorted({k[0] for k in s.lat})
    if sizes:
        _latency(ax3, s, systems, sizes, width, colours)
    else:  # --latency-messages 0: nothing to draw (a log axis of nothing raises)
        ax3.set_axis_off()
        ax3.text(0.5, 0.5, "no latency runs (--latency-messages 0)", ha="center", va="center",
                 transform=ax3.transAxes)  # fmt: skip
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _latency(
    ax3: Any, s: Summary, systems: Sequence[str], sizes: list[int], width: float,
    colours: dict[str, str],
) -> None:  # fmt: skip
    for i, x in enumerate(systems):
        xs = [j + (i - (len(systems) - 1) / 2) * width for j in range(len(sizes))]
        p50 = [s.lat[(z, 1, x)][0] * 1e3 if (z, 1, x) in s.lat else 0 for z in sizes]
        p99 = [s.lat[(z, 1, x)][1] * 1e3 if (z, 1, x) in s.lat else 0 for z in sizes]
        ax3.bar(xs, p50, width, color=colours[x], label=LABELS[x])
        ax3.scatter(xs, p99, color=colours[x], marker="_", s=200)
    ax3.set_yscale("log")
    ax3.set_xticks(range(len(sizes)), [f"{z // 1024} KiB x 1 rcpt" for z in sizes])
    ax3.set_ylabel("ms per message (log scale)")
    ax3.set_title("Latency per message at 1 session (bars p50, dashes p99)")
    ax3.grid(axis="y", which="both", alpha=0.3)
    ax3.legend(fontsize="small")


# --- main -------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m bench relay",
        description="Relay throughput of mailmoat against Haraka and Postfix, into smtp-sink.",
    )
    ap.add_argument("--quick", action="store_true", help="10 KiB x 20 sessions x 1 rcpt, once")
    ap.add_argument("--repeats", type=int, default=None, help="runs per point (default 3)")
    ap.add_argument(
        "--messages",
        type=int,
        default=None,
        help="messages per run for 1 and 10 KiB (100 KiB: a third) (default 1000)",
    )
    ap.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated subset of {', '.join(SYSTEMS + EXTRA_SYSTEMS)} (default: all)",
    )
    ap.add_argument(
        "--mailmoat-set",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a mailmoat setting for the 'mailmoat' system and for --profile, e.g."
        " dkim.workers=1 (JSON value or a plain string; repeatable; listed in the results)",
    )
    ap.add_argument("--sizes", default=None, help="message sizes in bytes, comma-separated")
    ap.add_argument("--sessions", default=None, help="concurrent sessions, comma-separated")
    ap.add_argument("--rcpts", default=None, help="recipients per message, comma-separated")
    ap.add_argument(
        "--latency-messages",
        type=int,
        default=None,
        help="timed transactions per system, size and rcpts per repeat at 1 session (default"
        " 200; a third for 100 KiB)",
    )
    ap.add_argument(
        "--profile",
        type=float,
        metavar="SECONDS",
        help="instead of the matrix: profile mailmoat with py-spy for SECONDS under"
        " 10 KiB x 20 sessions x 1 rcpt; writes relay-profile.md and relay-profile.txt",
    )
    ap.add_argument("--haraka-version", default=HARAKA_VERSION)
    ap.add_argument("--max-minutes", type=float, default=40.0, help="stop measuring after this")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for relay.md/json/png")
    args = ap.parse_args(argv)
    args.systems = [x.strip() for x in args.systems.split(",") if x.strip()]
    for x in args.systems:
        if x not in SYSTEMS + EXTRA_SYSTEMS:
            ap.error(f"unknown system {x!r}; choose from {', '.join(SYSTEMS + EXTRA_SYSTEMS)}")
    args.mailmoat_set = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            ap.error(f"--mailmoat-set wants SECTION.KEY=VALUE, not {item!r}")
        try:
            args.mailmoat_set[key.strip()] = json.loads(value)
        except ValueError:
            args.mailmoat_set[key.strip()] = value

    def ints(text: str | None, default: Sequence[int], quick: Sequence[int]) -> list[int]:
        if text:
            return [int(v) for v in text.split(",")]
        return list(quick if args.quick else default)

    args.sizes = ints(args.sizes, SIZES, (10240,))
    args.session_counts = ints(args.sessions, SESSIONS, (20,))
    args.rcpt_counts = ints(args.rcpts, RCPTS, (1,))
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.messages is None:
        args.messages = 500 if args.quick else 1000
    if args.latency_messages is None:
        args.latency_messages = 100 if args.quick else 200
    if args.repeats < 1 or args.messages < 1 or args.latency_messages < 0:
        ap.error("--repeats and --messages must be positive, --latency-messages not negative")
    return args


def machine() -> str:
    load = Path("/proc/loadavg").read_text().split()[:3]
    return (
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"Node.js {_version(['node', '--version'])}, "
        f"Postfix {_version(['postconf', '-dh', 'mail_version'])}"
        f", {platform.system()} {platform.release()}; load average at start {' '.join(load)}"
    )


def _version(argv: list[str]) -> str:
    exe = tool(argv[0]) or shutil.which(argv[0])
    if not exe:
        return "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        return subprocess.run(
            [exe, *argv[1:]], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    return "?"


def git_commit() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return out or "?"
    return "?"


def ensure_pyspy() -> str:
    exe = shutil.which("py-spy")
    if exe is None:
        print("installing py-spy with pip ...", flush=True)
        _run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], 900)
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return exe


# Innermost frames of a thread that waits for work: py-spy does not always see a lock wait as
# idle, so these samples are dropped rather than charged as CPU time.
IDLE_LEAVES = ("_worker (concurrent/futures/thread.py:", "wait (threading.py:")


def top_frames(
    raw: str, limit: int = 20
) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """From py-spy's raw (collapsed) output: busy samples, and the functions with the most
    samples as the innermost frame (own time) and anywhere on the stack (inclusive)."""
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.strip() for f in stack.split(";")[1:] if f.strip()]  # [0] is the process
        if not frames or frames[-1].startswith(IDLE_LEAVES):
            continue
        total += n
        own[frames[-1]] = own.get(frames[-1], 0) + n
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n
    by = sorted(own.items(), key=lambda kv: -kv[1])[:limit]
    # inclusive: mailmoat's own functions below the command-line entry point
    ours = {f: n for f, n in incl.items() if "mailmoat/" in f and "mailmoat/cli.py" not in f}
    ours = {f: n for f, n in ours.items() if "mailmoat/__main__.py" not in f}
    inc = sorted(ours.items(), key=lambda kv: -kv[1])[:limit]
    return total, by, inc


def thread_cpu(pid: int) -> dict[int, tuple[str, float]]:
    """Each thread of ``pid``: its name and CPU seconds (utime + stime)."""
    out = {}
    for entry in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            name = Path(f"/proc/{pid}/task/{entry}/comm").read_text().strip()
            st = Path(f"/proc/{pid}/task/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            out[int(entry)] = (name, (int(st[11]) + int(st[12])) / CLK_TCK)
    return out


def profile(args: argparse.Namespace) -> int:
    """Profile mailmoat with py-spy while smtp-source drives 10 KiB x 20 x 1 into it."""
    pyspy = ensure_pyspy()
    point = Point(10240, 20, 1)
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-profile-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o711)
        sink = counting_sink()
        mm = Mailmoat(tmp, sink, extra=args.mailmoat_set)
        sent, seconds, spy = 0, 0.0, None
        try:
            sink.start()
            mm.start()
            warm = measure(mm, sink, Run("mailmoat", point, 0, 500), 60)
            if warm.problem:
                raise BenchError(f"mailmoat failed the warm-up: {warm.problem}")
            out = tmp / "profile.txt"
            spy_argv = [pyspy, "record", "-p", str(mm.root_pid()), "--subprocesses"]
            spy_argv += ["-d", str(max(1, round(args.profile))), "-r", "200"]
            spy_argv += ["-f", "raw", "--function", "-o", str(out)]
            procs = process_tree(mm.root_pid())  # the supervisor and its workers, or one
            threads0 = {p: thread_cpu(p) for p in procs}
            spy = subprocess.Popen(
                spy_argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            deadline = time.monotonic() + args.profile + 120
            while spy.poll() is None and time.monotonic() < deadline:
                run = measure(mm, sink, Run("mailmoat", point, 0, 1000), 60)
                if run.problem:
                    raise BenchError(f"mailmoat failed under load: {run.problem}")
                sent += run.messages
                seconds += run.seconds
            spy_out = spy.communicate(timeout=60)[0].decode(errors="replace")
            if spy.returncode != 0 or not out.exists():
                raise BenchError(f"py-spy failed ({spy.returncode}): {spy_out[-1000:]}")
            raw = out.read_text()
            threads1 = {p: thread_cpu(p) for p in procs}
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
                spy.wait()
            mm.stop()
            sink.cleanup()
    total, own, incl = top_frames(raw)
    rate = sent / seconds if seconds else 0
    parts = []
    for pid in procs:
        used = {t: v[1] - threads0[pid].get(t, ("", 0.0))[1] for t, v in threads1[pid].items()}
        main_cpu = used.pop(pid, 0.0)
        by_name: dict[str, float] = {}
        for t, v in used.items():
            by_name[threads1[pid][t][0]] = by_name.get(threads1[pid][t][0], 0.0) + v
        role = "supervisor" if pid == mm.root_pid() and len(procs) > 1 else "worker"
        if len(procs) == 1:
            role = "the process"
        others = "".join(
            f", {n} threads {v:.1f} s" for n, v in sorted(by_name.items()) if v >= 0.05
        )
        parts.append(f"{role} {pid}: event-loop thread {main_cpu:.1f} s{others}")
    cpu_line = (
        "CPU during the profile (from /proc, per thread): "
        + "; ".join(parts)
        + f"; {sent:,} messages.\n\n"
    )

    settings = "".join(f" --mailmoat-set {item}" for item in args.set)

    def rows(items: list[tuple[str, int]]) -> str:
        lines = ["| function (file) | samples | share |", "|---|---:|---:|"]
        lines += [f"| `{f}` | {n:,} | {n / total:.1%} |" for f, n in items]
        return "\n".join(lines)

    text = (
        "# Where mailmoat spends its time under relay load\n\n"
        f"Command: `python -m bench relay --profile {args.profile:g}{settings}`"
        f" (mailmoat {git_commit()})."
        f" Machine: {machine()}.\n\n"
        f"py-spy record (200 samples/s, idle frames excluded, aggregated by function) on the"
        f" mailmoat processes (the supervisor and its workers) for {args.profile:g} s while"
        f" smtp-source sent 10 KiB messages over 20 sessions, one recipient each, to smtp-sink"
        f" through it ({sent:,} messages at {rate:,.0f} msg/s; py-spy pauses the processes to"
        f" sample, so the rate is lower than unprofiled). {total:,} busy samples over"
        f" {len(procs)} process(es) ({total / (args.profile * 200):.0%} of one core); samples"
        f" of worker threads"
        f" waiting for work are left out.\n\n"
        f"{cpu_line}"
        f"Own time (the innermost Python frame; time in C code such as uvloop's or the socket"
        f" calls is charged to the Python function that called it, and `Runner.run` stands"
        f" for uvloop's own loop: polling, accepting, reading and dispatching callbacks):\n\n"
        f"{rows(own)}\n\n"
        f"Inclusive, mailmoat's functions (anywhere on the stack):\n\n{rows(incl)}\n"
    )
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relay-profile.md").write_text(text)
    (args.out / "relay-profile.txt").write_text(raw)
    print(f"written: {args.out / 'relay-profile.md'}, {args.out / 'relay-profile.txt'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile:
        ensure_postfix()
        return profile(args)
    started = time.monotonic()
    deadline = started + args.max_minutes * 60

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    ensure_postfix()
    wants_haraka = any(x.startswith("haraka") for x in args.systems)
    script = ensure_haraka(args.haraka_version) if wants_haraka else None
    has_plot = ensure_matplotlib()
    info = machine()
    points = [
        Point(size, sess, rc)
        for size in args.sizes
        for sess in args.session_counts
        for rc in args.rcpt_counts
    ]
    runs: list[Run] = []
    lats: list[LatencyRun] = []
    systems: dict[str, System] = {}
    notes: list[str] = []
    cut_short = ""
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-relay-") as tmp_name:
        tmp = Path(tmp_name)
        tmp.chmod(0o711)
        sink = counting_sink()
        try:
            sink.start()
            for name in args.systems:
                if name == "direct":
                    systems[name] = Direct(sink)
                elif name == "mailmoat":
                    systems[name] = Mailmoat(tmp, sink, extra=args.mailmoat_set)
                elif name == "mailmoat-1p":
                    systems[name] = Mailmoat(tmp, sink, name, {"server.workers": 1})
                elif name == "mailmoat-nodns":
                    systems[name] = Mailmoat(tmp, sink, name, {"dns.checks": False})
                elif name in ("mailmoat-dir", "mailmoat-redis"):
                    systems[name] = MailmoatStore(tmp, sink, name)
                elif name == "mailmoat-console":
                    from bench.console_load import ConsoleMailmoat

                    systems[name] = ConsoleMailmoat(tmp, sink)
                elif name in ("haraka", "haraka-2n"):
                    assert script is not None
                    systems[name] = Haraka(tmp, sink, script, name, 2 if name == "haraka-2n" else 1)
                else:
                    systems[name] = Postfix(sink)
                print(f"starting {name} ...", flush=True)
                systems[name].start()
            order = list(args.systems)
            print("warming up ...", flush=True)
            for name in order:
                warm = measure(systems[name], sink, Run(name, Point(1024, 10, 1), 0, 200), 60)
                if warm.problem:
                    raise BenchError(f"{name} failed the warm-up: {warm.problem}")
            total = len(points) * len(order) * args.repeats
            done = 0
            for rep in range(args.repeats):
                for i, point in enumerate(points):
                    shift = (rep * len(points) + i) % len(order)
                    for name in order[shift:] + order[:shift]:
                        if time.monotonic() > deadline:
                            raise TimeoutError
                        n = messages_for(point.size, point.sessions, args.messages, name)
                        run = measure(systems[name], sink, Run(name, point, rep, n), 60 + n * 0.05)
                        runs.append(run)
                        done += 1
                        status = "INVALID " + run.problem.splitlines()[0] if run.problem else ""
                        extra = f" (end-to-end {run.e2e_rate:,.0f}/s)" if name == "postfix" else ""
                        print(
                            f"[{done}/{total}] rep {rep + 1} {point.label:>17} {name:>8}: "
                            f"{run.rate:8,.0f} msg/s{extra}, cpu {run.cpu:.2f} s, "
                            f"rss {run.rss / 2**20:.0f} MiB pss {run.pss / 2**20:.0f} MiB"
                            f" {status}",
                            flush=True,
                        )
                if args.latency_messages:
                    for j, (size, rc) in enumerate(
                        (z, r) for z in args.sizes for r in args.rcpt_counts
                    ):
                        shift = (rep + j) % len(order)
                        for name in order[shift:] + order[:shift]:
                            if time.monotonic() > deadline:
                                raise TimeoutError
                            n = (
                                args.latency_messages
                                if size <= 10240
                                else args.latency_messages // 3
                            )
                            lat = measure_latency(
                                systems[name], sink, LatencyRun(name, size, rc, rep), max(n, 1)
                            )
                            lats.append(lat)
                            if lat.problem:
                                print(f"latency {name} {size} x {rc}: INVALID {lat.problem}")
                    print(f"latency round {rep + 1} done", flush=True)
        except TimeoutError:
            cut_short = f"stopped after --max-minutes {args.max_minutes:g}: results are partial"
            print(cut_short, flush=True)
        except KeyboardInterrupt:
            cut_short = "interrupted: results are partial"
            print(cut_short, flush=True)
        finally:
            for sys_ in systems.values():
                with contextlib.suppress(Exception):
                    sys_.stop()
            sink.cleanup()
        for sys_ in systems.values():
            sent = 200 + sum(r.messages for r in runs if r.system == sys_.name)  # + warm-up
            sent += sum(len(x.samples) for x in lats if x.system == sys_.name)
            if isinstance(sys_, Mailmoat) and sys_.worker_calls is not None:
                sys_.notes.append(
                    f"{sys_.worker_calls:,} store calls from the workers to the supervisor for"
                    f" {sent:,} messages: {sys_.worker_calls / sent:.2f} per message"
                )
            if isinstance(sys_, MailmoatStore) and sys_.redis is not None:
                sys_.notes.append(
                    f"{sys_.store_calls:,} Redis FCALLs for {sent:,} messages:"
                    f" {sys_.store_calls / sent:.2f} store calls per message (heartbeats included)"
                )
                if sys_.redis_gauges:
                    sys_.notes.append("Redis store " + store_ops(sys_.redis_gauges, sent))
            notes += [f"{LABELS[sys_.name]}: {n}" for n in sys_.notes]
    minutes = (time.monotonic() - started) / 60
    summary = summarise(runs, lats)
    order = [x for x in SYSTEMS + EXTRA_SYSTEMS if x in args.systems]
    text = tables(summary, points, order, args.sizes)
    checks = targets(summary)
    check_text = "\n".join(
        f"- {name}: {value} ({'met' if ok else 'NOT met'})" for name, ok, value in checks
    )
    reference = targets(summary, "mailmoat-nodns") if "mailmoat-nodns" in args.systems else []
    if reference:
        check_text += "\n\nFor reference, not a target (the defaults have DNS checks on):\n\n"
        check_text += "\n".join(f"- {name}: {value}" for name, _, value in reference)
    problems = [r for r in runs if r.problem] + [x for x in lats if x.problem]
    cmd = "python -m bench relay " + " ".join(sys.argv[1:] if argv is None else argv)
    head = (
        f"Command: `{cmd.strip()}` (mailmoat {git_commit()}, {minutes:.1f} minutes). "
        f"Machine: {info}.\n\n"
        f"smtp-source (one connection per message, HELO, {args.repeats} repeat(s) per point,"
        f" {args.messages} messages a run for 1 and 10 KiB, a third of that for 100 KiB, a"
        f" quarter of either at 1 session, at least 5 per session; {DIRECT_FACTOR} times as many"
        f" for direct, whose runs are short) into one smtp-sink; the"
        f" systems alternate within each point, their order rotating from point to point."
        f" msg/s is the median of the repeats (ratio to mailmoat in brackets); every run was"
        f" checked against the sink's count.\n"
    )
    body = f"{head}\n{text}\n"
    if checks:
        body += f"\nTargets (issue 6):\n\n{check_text}\n"
    body += "\nSet-up:\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    if cut_short:
        body += f"\n**{cut_short}**\n"
    if problems:
        body += f"\n{len(problems)} invalid run(s):\n\n"
        for r in problems:
            what = r.point.label if isinstance(r, Run) else f"latency {r.size} x {r.rcpts}"
            body += f"- {r.system} {what} rep {r.repeat + 1}: {r.problem.splitlines()[0]}\n"
    print()
    print(body)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "relay.md").write_text("# Relay throughput against Haraka and Postfix\n\n" + body)
    raw = {
        "command": cmd.strip(),
        "machine": info,
        "runs": [asdict(r) | {"rate": r.rate, "e2e_rate": r.e2e_rate} for r in runs],
        "latency": [
            {k: v for k, v in asdict(x).items() if k != "samples"}
            | {
                "n": len(x.samples),
                "p50": percentile(x.samples, 0.5),
                "p90": percentile(x.samples, 0.9),
                "p99": percentile(x.samples, 0.99),
                "mean": statistics.fmean(x.samples) if x.samples else None,
            }
            for x in lats
        ],
    }
    (args.out / "relay.json").write_text(json.dumps(raw, indent=1) + "\n")
    written = ["relay.md", "relay.json"]
    if has_plot and summary.rate:
        chart(summary, points, order, args.out / "relay.png")
        written.append("relay.png")
    print(f"written: {', '.join(str(args.out / w) for w in written)}")
    return 1 if cut_short or not runs else 0


if __name__ == "__main__":
    sys.exit(main())
