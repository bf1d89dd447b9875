"""Attack harness: bounded denial-of-service attacks on loopback against a real mailmoat while a
legitimate client keeps sending mail through it to a counting downstream.

    python -m bench.attack                     # every scenario, 20 s of measurement each
    python -m bench.attack --quick             # 8 s each, for a quick look
    python -m bench.attack --only combined,capacity

For each scenario it starts `python -m mailmoat serve` (uvloop, a config file written for the
run, the stats endpoint on a unix socket) in front of an in-process SMTP sink, warms the
legitimate sender up, starts the attack workers (bench/attackers.py, one process each, source
addresses from 127.0.0.0/8 so that per-address limits do not simply block one address), lets
the attack build up, then measures the legitimate sender (from 127.0.0.2) for the chosen time.
It prints a table and writes it as Markdown under bench/results/.

The capacity scenario opens as many idle connections as mailmoat can hold (target 20,000, in
four worker processes) and reports mailmoat's RSS per connection and how fast a new
legitimate connection is greeted meanwhile.

Every process it starts has a deadline and is stopped by its process id; the whole run has an
overall deadline too. It raises its own RLIMIT_NOFILE to the hard limit (mailmoat raises its own).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform
import resource
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fake_downstream import FakeDownstream
from tests.support.ports import free_port

from bench.peers import Legit, LegitDns, LegitResult, probe_connections

ROOT = Path(__file__).resolve().parent.parent
LEGIT_SOURCE = "127.0.0.2"
SINK_EXTENSIONS = ("PIPELINING", "8BITMIME", "SMTPUTF8")
"""What the internal server behind mailmoat offers."""
PROBE_SOURCES = [f"127.0.0.{i}" for i in range(3, 8)]
PROBE_RATE = 5.0
"""New legitimate connections per second, greeting timed (one a second from each address)."""
NICE = 19
"""Niceness of the attack workers (--attacker-nice): they share this machine's CPUs with
mailmoat, which a real attacker, on its own machines, does not."""
LEGIT_RATE = 20.0
"""Messages per second the legitimate sender offers (enough samples for a p99)."""
LEGIT_PER_CONNECTION = 50
"""Messages per connection: 24 new connections a minute, under admission.max_rate (60)."""
START_DEADLINE = 60.0
"""Seconds `mailmoat serve` has to answer its stats endpoint (its workers start in that time:
on a machine loaded by other work, 15 s was not always enough)."""
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------- scenarios
def flood(rate: int, second: int = 3, networks: int = 100, per_network: int = 4) -> dict[str, Any]:
    # `networks` /24s x `per_network` addresses opening `rate` new connections/s in total
    return {"kind": "flood", "rate": rate, "sources": [second, networks, per_network]}


def slowloris(connections: int, second: int = 2, interval: float = 3.0) -> dict[str, Any]:
    # 100 /24s x 5 addresses, 10 connections each: within the default per-address and
    # per-network limits, as a botnet spread over many networks would be
    return {
        "kind": "slowloris",
        "connections": connections,
        "interval": interval,
        "sources": [second, 100, max(1, connections // 1000)],
    }


def sessions(kind: str, connections: int, second: int) -> dict[str, Any]:
    return {"kind": kind, "connections": connections, "sources": [second, 20, 5]}


@dataclass
class Scenario:
    key: str
    title: str
    attacks: list[dict[str, Any]]
    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    ramp: float = 4.0


SCENARIOS = [
    Scenario("baseline", "no attack", [], ramp=0.0),
    Scenario(
        "flood",
        "connection flood, 2000 new connections/s from 100 addresses",
        [flood(2000, networks=25)],
    ),
    Scenario(
        "slowloris", "slowloris, 5000 connections, 1 byte every ~3 s", [slowloris(5000)], ramp=8
    ),
    Scenario("junk", "junk-command flood, 200 connections of NOOPs", [sessions("junk", 200, 4)]),
    Scenario(
        "errors", "error flood, 200 connections of bad commands", [sessions("errors", 200, 5)]
    ),
    Scenario(
        "pregreet",
        "pregreet bots, 300 connections talking first (pregreet.wait = 2 s)",
        [sessions("pregreet", 300, 6)],
        config={"pregreet": {"wait": 2.0}},
    ),
    Scenario(
        "mailflood",
        "valid-mail flood, 100 connections sending messages back to back",
        [sessions("mailflood", 100, 9)],
    ),
    Scenario(
        "combined",
        "slowloris 5000 connections + flood 1000 new connections/s from 400 addresses",
        [slowloris(5000, second=7), flood(1000, second=8)],
        ramp=8,
    ),
]


# ------------------------------------------------------------------- others
def cpu_by_process() -> dict[int, float]:
    """CPU seconds used so far by every process on the machine (from /proc)."""
    out = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(entry)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def cpu_wait_ns(pids: list[int]) -> int:
    """Nanoseconds the threads of `pids` have spent runnable but waiting for a CPU
    (/proc/PID/task/TID/schedstat, second field): the time a busy machine adds to latency
    whatever the program does."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        total += int(f.read().split()[1])
    return total


def machine_ticks() -> tuple[int, int]:
    """(idle, total) clock ticks of all CPUs so far (/proc/stat), for the machine's idle share."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    return values[3] + values[4], sum(values[:8])  # idle + iowait; user..steal


def others_cpu(before: dict[int, float], after: dict[int, float], ours: set[int]) -> float:
    """CPU seconds that processes outside this benchmark used between two snapshots."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items() if pid not in ours)


# ------------------------------------------------------------------ mailmoat
def toml(config: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines.append("")
    return "\n".join(lines)


def merge(base: dict[str, dict[str, Any]], extra: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = {k: dict(v) for k, v in base.items()}
    for section, values in extra.items():
        out.setdefault(section, {}).update(values)
    return out


class Mailmoat:
    """One `mailmoat serve` (its worker processes included), watched through /proc and its stats
    socket."""

    def __init__(self, workdir: Path, config: dict[str, dict[str, Any]], port: int) -> None:
        self.workdir = workdir
        self.config = config
        self.port = port
        self.admin = str(workdir / "admin.sock")
        self.proc: asyncio.subprocess.Process | None = None
        self.peak_rss = 0

    async def start(self) -> None:
        cfg = self.workdir / "mailmoat.toml"
        cfg.write_text(toml(self.config))
        log = open(self.workdir / "mailmoat.log", "ab")  # noqa: SIM115 (closed by the child)
        env = dict(os.environ, PYTHONPATH=f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mailmoat", "serve", "-c", str(cfg),
            stdout=log, stderr=log, env=env, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + START_DEADLINE
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"mailmoat exited: see {self.workdir / 'mailmoat.log'}")
            with contextlib.suppress(OSError, ValueError):
                await self.stats()
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"mailmoat did not start in {START_DEADLINE:g} s")

    async def stats(self) -> dict[str, Any]:
        """`mailmoat stats` (its own client, whatever the endpoint speaks)."""
        from mailmoat.server.admin import fetch

        return dict(await asyncio.to_thread(fetch, self.admin, 5.0))

    def pids(self) -> list[int]:
        """The `mailmoat serve` process and its worker processes (server.workers)."""
        assert self.proc is not None
        out = [self.proc.pid]
        with contextlib.suppress(OSError):
            with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                out += [int(x) for x in f.read().split()]
        return out

    def rss_kib(self) -> int:
        """Resident memory of the supervisor and its workers together."""
        kib = 0
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/statm") as f:
                kib += int(f.read().split()[1]) * PAGE // 1024
        self.peak_rss = max(self.peak_rss, kib)
        return kib

    def cpu_seconds(self) -> float:
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / CLK_TCK

    async def watch(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.rss_kib()
            await asyncio.sleep(0.25)

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 15)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# ------------------------------------------------------------------- workers
class Attack:
    """One attack worker process (bench/attackers.py)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else -1

    async def start(self) -> None:
        env = dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.attackers", json.dumps(self.spec),
            stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )  # fmt: skip

    def terminate(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    async def result(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), self.spec["duration"] + 60)
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            return {"kind": self.spec["kind"], "error": "worker did not finish"}
        try:
            return dict(json.loads(out.decode().strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return {"kind": self.spec["kind"], "error": f"no report (exit {self.proc.returncode})"}


# ------------------------------------------------------------------- running
@dataclass
class Row:
    scenario: Scenario
    legit: LegitResult
    rss_start: int
    rss_peak: int
    cpu_percent: float
    downstream_peak: int
    downstream_messages: int
    attacks: list[dict[str, Any]]
    counters: dict[str, int]
    probes: list[float]
    probes_failed: int
    others_cpu: float
    """CPU used meanwhile by processes outside this benchmark, in % of one CPU."""
    cpu_wait: tuple[float, float] = (0.0, 0.0)
    """Milliseconds per second that mailmoat's processes, and this harness (the legitimate
    sender and the sink), waited runnable for a CPU during the measurement."""
    idle: float = float("nan")
    """Share of the machine's CPU time left idle during the measurement, %."""
    loop_lags: list[float] = field(default_factory=list)
    """Largest event-loop lag of each mailmoat process, ms: the supervisor, the workers, then
    the clean lane's worker (server.clean_lane)."""


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


LEGIT_NAMES = {
    LEGIT_SOURCE: "legit.test",
    **{ip: f"probe{ip.rsplit('.', 1)[1]}.legit.test" for ip in PROBE_SOURCES},
}


def base_config(
    port: int, sink: FakeDownstream, admin: str, dns_port: int
) -> dict[str, dict[str, Any]]:
    """Defaults but for the addresses (mailmoat's DNS checks ask the harness's dnsmasq)."""
    sink_port = sink.port
    return {
        "server": {"listen": [f"127.0.0.1:{port}"], "hostname": "mx.bench.test"},
        "dns": {"nameservers": [f"127.0.0.1:{dns_port}"]},
        "domains": {"local": ["example.test"]},
        "relay": {"downstream": f"127.0.0.1:{sink_port}"},
        "admin": {"listen": admin},
        "log": {"level": "info"},
    }


async def run_scenario(
    sc: Scenario, sink: FakeDownstream, dns_port: int, workdir: Path, measure: float, quick: bool
) -> Row:
    port = free_port()
    wd = workdir / sc.key
    wd.mkdir(parents=True)
    mm = Mailmoat(wd, {}, port)
    mm.config = merge(base_config(port, sink, mm.admin, dns_port), sc.config)
    legit = Legit(port, LEGIT_SOURCE, rate=LEGIT_RATE, per_connection=LEGIT_PER_CONNECTION)
    attacks: list[Attack] = []
    watcher: asyncio.Task[None] | None = None
    try:
        await mm.start()
        # warm up (and, with the pregreet test on, let each legitimate address pass it once)
        warm = sc.config.get("pregreet", {}).get("wait", 0) + 1.5
        (warmed, _) = await asyncio.gather(
            legit.run(warm), probe_connections(port, PROBE_SOURCES, PROBE_RATE, warm)
        )
        if warmed.delivered == 0:
            raise RuntimeError(f"warm-up failed: {warmed.errors[:3]}")
        rss_start = mm.rss_kib()
        mm.peak_rss = rss_start
        watcher = asyncio.ensure_future(mm.watch())
        ramp = sc.ramp / 2 if quick else sc.ramp
        for spec in sc.attacks:
            a = Attack({**spec, "port": port, "duration": ramp + measure + 1, "nice": NICE})
            await a.start()
            attacks.append(a)
        await asyncio.sleep(ramp)
        sink.reset_peak()
        messages0 = sink.delivered
        cpu0, t0, everyone0 = mm.cpu_seconds(), time.monotonic(), cpu_by_process()
        wait0 = (cpu_wait_ns(mm.pids()), cpu_wait_ns([os.getpid()]))
        ticks0 = machine_ticks()
        legit_result, (probes, probe_failed) = await asyncio.gather(
            legit.run(measure), probe_connections(port, PROBE_SOURCES, PROBE_RATE, measure)
        )
        wall = time.monotonic() - t0
        ticks1 = machine_ticks()
        idle = 100 * (ticks1[0] - ticks0[0]) / max(ticks1[1] - ticks0[1], 1)
        waited = (
            (cpu_wait_ns(mm.pids()) - wait0[0]) / 1e6 / wall,
            (cpu_wait_ns([os.getpid()]) - wait0[1]) / 1e6 / wall,
        )
        cpu = (mm.cpu_seconds() - cpu0) / wall * 100
        ours = {os.getpid(), *mm.pids(), *(a.pid for a in attacks)}
        others = others_cpu(everyone0, cpu_by_process(), ours) / wall * 100
        snapshot = await mm.stats()
        counters = snapshot["counters"]
        counters["loop.lag_max_ms"] = snapshot["gauges"].get("loop.lag_max_ms", 0)
        reports = [await a.result() for a in attacks]
        lags = [float(snapshot.get("loop_lag_max_ms", counters["loop.lag_max_ms"]))]
        lags += [float(w.get("loop_lag_max_ms", 0)) for w in snapshot.get("workers", [])]
        lags += [float(snapshot["lane"].get("loop_lag_max_ms", 0))] if "lane" in snapshot else []
        return Row(
            sc, legit_result, rss_start, mm.peak_rss, cpu, sink.max_concurrent,
            sink.delivered - messages0, reports, counters, probes, probe_failed, others,
            waited, idle, lags,
        )  # fmt: skip
    finally:
        if watcher is not None:
            watcher.cancel()
        for a in attacks:
            a.terminate()
        await mm.stop()


@dataclass
class Capacity:
    requested: int
    cap: int
    target: int
    held: int
    seconds_to_hold: float
    rss_before: int
    rss_after: int
    latencies: list[float]
    counters: dict[str, int]
    workers: list[dict[str, Any]]

    @property
    def kib_per_connection(self) -> float:
        return (self.rss_after - self.rss_before) / max(self.held, 1)


async def run_capacity(
    sink: FakeDownstream, dns_port: int, workdir: Path, requested: int
) -> Capacity:
    target = requested
    port = free_port()
    wd = workdir / "capacity"
    wd.mkdir()
    mm = Mailmoat(wd, {}, port)
    # Idle clients are the point here: no stress mode (it would close them after 10 s) and
    # long deadlines; every other setting keeps its default.
    mm.config = merge(
        base_config(port, sink, mm.admin, dns_port),
        {
            "admission": {"max_connections": target},
            "stress": {"start_at": 1.0},
            "timeouts": {"greeting": 600.0, "command": 600.0},
            "log": {"level": "warning"},
        },
    )
    legit = Legit(port, LEGIT_SOURCE)
    attacks: list[Attack] = []
    try:
        await mm.start()
        # mailmoat lowers its cap to fit its fd limit; leave room for the legitimate client
        cap = int((await mm.stats())["gauges"]["connections.max"])
        target = min(target, cap - 20)
        per_worker = -(-target // 4)
        attacks = [
            Attack(
                {
                    "kind": "idle",
                    "connections": per_worker,
                    # 20 connections per address, 100 per /24: within the default limits
                    "sources": [20 + 2 * k, -(-per_worker // 100), 5],
                    "port": port,
                    "duration": 240,
                    "connect_concurrency": 250,
                }
            )
            for k in range(4)
        ]
        await legit.connect_latency(3)
        await asyncio.sleep(0.5)
        rss_before = mm.rss_kib()
        started = time.monotonic()
        for a in attacks:
            await a.start()
        held, last_change, best = 0, time.monotonic(), 0
        while time.monotonic() - started < 120:
            await asyncio.sleep(0.5)
            held = int((await mm.stats())["gauges"]["connections.active"])
            if held > best:
                best, last_change = held, time.monotonic()
            if held >= target or time.monotonic() - last_change > 5:
                break
        seconds = last_change - started
        await asyncio.sleep(2)
        stats = await mm.stats()
        held = int(stats["gauges"]["connections.active"])
        rss_after = mm.rss_kib()
        latencies = await legit.connect_latency(50)
        for a in attacks:
            a.terminate()
        reports = [await a.result() for a in attacks]
        return Capacity(
            requested, cap, target, held, seconds, rss_before, rss_after, latencies,
            stats["counters"], reports,
        )  # fmt: skip
    finally:
        for a in attacks:
            a.terminate()
        await mm.stop()


# ------------------------------------------------------------------- reports
def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def describe_attack(reports: list[dict[str, Any]]) -> str:
    parts = []
    for r in reports:
        if "error" in r:
            parts.append(f"{r['kind']}: {r['error']}")
            continue
        c = r["counts"]
        if r["kind"] == "flood":
            attempts = c.get("attempts", 0)
            refused = c.get("first_reply.421", 0)
            parts.append(
                f"flood {attempts / max(r['seconds'], 0.1):.0f}/s, "
                f"{100 * refused / max(attempts, 1):.0f}% refused at once"
            )
        elif r["kind"] == "mailflood":
            parts.append(
                f"mailflood: {c.get('messages', 0)} messages accepted "
                f"({c.get('messages', 0) / max(r['seconds'], 0.1):.0f}/s), "
                f"{sum(v for k, v in c.items() if k.startswith('reply.4'))} temporary failures"
            )
        else:
            parts.append(
                f"{r['kind']}: {c.get('attempts', 0)} connections, held avg {r['held_avg']:.0f} "
                f"/ max {r['held_max']}, {c.get('closed_by_server', 0)} closed by mailmoat, "
                f"{c.get('first_reply.421', 0)} refused at connect"
            )
        parts[-1] += f" (attacker CPU {r.get('cpu', 0):.0f} s)"
    return "; ".join(parts) or "-"


def describe_defences(counters: dict[str, int]) -> str:
    refused = {k[8:]: v for k, v in counters.items() if k.startswith("refused.")}
    total = sum(refused.values())
    top = ", ".join(f"{k} {v}" for k, v in sorted(refused.items(), key=lambda kv: -kv[1])[:3])
    closed = {
        k[7:]: v
        for k, v in counters.items()
        if k.startswith("closed.") and k[7:] not in ("refused", "quit", "eof", "client_closed")
    }
    shut = ", ".join(f"{k} {v}" for k, v in sorted(closed.items(), key=lambda kv: -kv[1])[:3])
    out = f"refused {total}" + (f" ({top})" if top else "")
    if shut:
        out += f"; closed: {shut}"
    out += f"; bans {counters.get('bans', 0)}"
    if counters.get("stress.started"):
        out += f"; stress on x{counters['stress.started']}"
    if counters.get("tarpit.delayed"):
        out += f"; tarpit delays {counters['tarpit.delayed']}"
    return out


def render(rows: list[Row], capacity: Capacity | None, args: argparse.Namespace) -> str:
    bases = sorted(r.legit.percentile(99) for r in rows if r.scenario.key == "baseline")
    base_p99 = bases[len(bases) // 2] if bases else float("nan")  # the median baseline
    out = []
    now = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    out.append(f"# mailmoat attack harness, {now}\n")
    load = ", ".join(f"{x:.2f}" for x in args.load_before)
    load_after = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    out.append(
        f"`{' '.join(['python -m bench.attack', *sys.argv[1:]])}` on {platform.node()}: "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}; loopback only. Each attack ran "
        f"{args.seconds:.0f} s of measurement after its build-up, with the legitimate sender "
        f"({LEGIT_SOURCE}, {LEGIT_RATE:.0f} messages/s, {LEGIT_PER_CONNECTION} per connection) "
        "going the whole time. mailmoat ran "
        "with uvloop and default settings except where a scenario says otherwise (DNS checks "
        "on, answered by a private dnsmasq: the legitimate addresses pass FCrDNS, HELO and SPF, "
        "the attackers' addresses have no names); its downstream is an in-process counting "
        "sink; relay.pool_size = 10. The attack "
        f"workers run at nice {NICE}. Load average before the run {load}, after {load_after}.\n"
    )
    if rows:
        out.append(
            "| scenario | legit delivered | p50 ms | p99 ms | p99 / base | new connection "
            "greeted p50 / p99 ms | mailmoat RSS MiB (start→peak) | mailmoat CPU | "
            "other processes' CPU | machine idle | waited for a CPU ms/s (mailmoat / harness) | "
            "loop lag max ms (supervisor / workers / lane) | downstream peak conns | attack | "
            "mailmoat's defences |"
        )
        out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            lg = r.legit
            share = 100 * lg.delivered / max(lg.attempted, 1)
            p99 = lg.percentile(99)
            out.append(
                f"| {r.scenario.title} | {lg.delivered}/{lg.attempted} ({share:.1f}%) | "
                f"{ms(lg.percentile(50))} | {ms(p99)} | {p99 / base_p99:.2f}x | "
                f"{ms(pct(r.probes, 0.5))} / {ms(pct(r.probes, 0.99))}"
                + (f" ({r.probes_failed} failed)" if r.probes_failed else "")
                + f" | {r.rss_start / 1024:.0f}→{r.rss_peak / 1024:.0f} | {r.cpu_percent:.0f}% | "
                f"{r.others_cpu:.0f}% | {r.idle:.0f}% | "
                f"{r.cpu_wait[0]:.0f} / {r.cpu_wait[1]:.0f} | "
                f"{' / '.join(f'{lag:.0f}' for lag in r.loop_lags)} | "
                f"{r.downstream_peak} | {describe_attack(r.attacks)} | "
                f"{describe_defences(r.counters)} |"
            )
        for r in rows:
            if r.legit.errors:
                out.append(
                    f"\n{r.scenario.key}: legitimate sender errors (first 3): "
                    + "; ".join(r.legit.errors[:3])
                )
    if capacity is not None:
        c = capacity
        lat = sorted(c.latencies)
        p = (lambda q: lat[min(len(lat) - 1, round(q * (len(lat) - 1)))]) if lat else None
        out.append("\n## Capacity: idle connections\n")
        out.append(
            "| idle connections held | time to open | mailmoat RSS before → after | "
            "RSS per connection | new legit connection greeted in (p50 / p99 / max) |"
        )
        out.append("|---|---|---|---|---|")
        out.append(
            f"| {c.held} (asked {c.requested}; mailmoat's fd-limited cap {c.cap}) | "
            f"{c.seconds_to_hold:.1f} s | "
            f"{c.rss_before / 1024:.1f} MiB → {c.rss_after / 1024:.1f} MiB | "
            f"{c.kib_per_connection:.2f} KiB | "
            + (f"{ms(p(0.5))} / {ms(p(0.99))} / {ms(lat[-1])} ms |" if p else "- |")
        )
        refused = {k: v for k, v in c.counters.items() if k.startswith("refused.")}
        if refused:
            out.append(f"\nRefused while filling up: {refused}")
    out.append("")
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> str:
    # the internal server: counts messages and its most simultaneous connections
    sink = await FakeDownstream(record=False, extensions=SINK_EXTENSIONS).start()
    rows: list[Row] = []
    capacity = None
    selected = set(args.only.split(",")) if args.only else None
    with tempfile.TemporaryDirectory(prefix="mailmoat-bench-") as tmp:
        workdir = Path(tmp)
        dns = LegitDns(workdir, LEGIT_NAMES)
        dns_port = await asyncio.to_thread(dns.start)
        try:
            rows, capacity = await run_all(args, sink, dns_port, workdir, selected)
        finally:
            dns.stop()
    await sink.stop()
    return render(rows, capacity, args)


async def run_all(
    args: argparse.Namespace,
    sink: FakeDownstream,
    dns_port: int,
    workdir: Path,
    selected: set[str] | None,
) -> tuple[list[Row], Capacity | None]:
    rows: list[Row] = []
    capacity = None
    runs = [
        (sc, n)
        for sc in SCENARIOS
        if selected is None or sc.key in selected or sc.key == "baseline"
        for n in range(args.repeat)
    ]
    for sc, n in runs:
        print(f"== {sc.key}: {sc.title} (run {n + 1})", file=sys.stderr, flush=True)
        rows.append(
            await run_scenario(sc, sink, dns_port, workdir / str(n), args.seconds, args.quick)
        )
        r = rows[-1]
        worst = sorted(zip(r.legit.latencies, r.legit.started, strict=True))[-5:]
        print(
            "   slowest legit messages (ms @ s): "
            + ", ".join(f"{lat * 1000:.0f} @ {t:.1f}" for lat, t in reversed(worst))
            + f"; mailmoat loop lag max {r.counters.get('loop.lag_max_ms')} ms"
            + f" (supervisor / workers / lane: {' / '.join(f'{lag:.0f}' for lag in r.loop_lags)})"
            + f"; machine idle {r.idle:.0f}%"
            + f"; waited for a CPU {r.cpu_wait[0]:.0f} ms/s (mailmoat), "
            f"{r.cpu_wait[1]:.0f} ms/s (harness)"
            + f"; new connections greeted p50 {ms(pct(r.probes, 0.5))} p99 "
            f"{ms(pct(r.probes, 0.99))} max {ms(pct(r.probes, 1))} ms",
            file=sys.stderr,
        )
        for i, spans in sorted(r.legit.phases.items()):
            print(
                f"   new connection @ {r.legit.started[i]:.1f} s: "
                + ", ".join(f"{k} {v * 1000:.1f}" for k, v in spans.items())
                + " ms",
                file=sys.stderr,
            )
        print(
            f"   legit {r.legit.delivered}/{r.legit.attempted} p50 "
            f"{ms(r.legit.percentile(50))} ms p99 {ms(r.legit.percentile(99))} ms; "
            f"downstream peak {r.downstream_peak}",
            file=sys.stderr,
            flush=True,
        )
    if selected is None or "capacity" in selected:
        print(f"== capacity: {args.capacity} idle connections", file=sys.stderr, flush=True)
        capacity = await run_capacity(sink, dns_port, workdir, args.capacity)
    return rows, capacity


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measurement per scenario")
    parser.add_argument("--quick", action="store_true", help="8 s per scenario, short build-up")
    parser.add_argument("--only", help="comma-separated scenario keys (baseline always runs)")
    parser.add_argument("--capacity", type=int, default=20000, help="idle connections to hold")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each scenario")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--budget", type=float, default=1200, help="hard limit for the run (s)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = min(args.seconds, 8.0)
    args.load_before = os.getloadavg()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    report = runner(asyncio.wait_for(main_async(args), args.budget))
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = args.out / f"attack-{stamp}.md"
    path.write_text(report)
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
