"""Directory harvest simulation: a real gateway on loopback, a static directory of real users,
a dictionary attack from one IP and from many IPs at once, and a legitimate sender throughout.

    python bench/harvest.py                       # 2,000 users, 20,000 guesses, 60 s a scenario
    python bench/harvest.py --duration 20 --ips 100   # shorter

The gateway runs as its own process (`python -m mailmoat serve`) with default harvest settings,
delivering to a counting SMTP sink that accepts everything (the worst internal server: any
invalid recipient that got through would be visible there). Attackers bind to 127.x.y.z
addresses (one source each); the legitimate sender is 127.99.0.1. Each attacker session sends
up to 20 RCPTs one at a time, then DATA when something was accepted (so what the gateway
accepts reaches the sink), then QUIT; refused connections are retried every second.

Prints a table and writes it as Markdown to bench/results/harvest.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.fake_downstream import FakeDownstream
from tests.support.ports import free_port
from tests.support.talk import Talk

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "example.test"
SYLLABLES = (
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "sa",
    "ti",
    "vo",
    "xe",
    "za",
    "ber",
    "dan",
    "fel",
    "gor",
    "hil",
    "jun",
    "kor",
    "lim",
    "mor",
    "nat",
    "per",
)


def names(rnd: random.Random, n: int, taken: set[str]) -> list[str]:
    out = []
    while len(out) < n:
        first = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(1, 3)))
        last = "".join(rnd.choice(SYLLABLES) for _ in range(rnd.randint(1, 3)))
        name = rnd.choice(
            [f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rnd.randint(1, 99)}"]
        )
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


# --- one scenario -------------------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    replies: Counter[str] = field(default_factory=Counter)
    confirmed: dict[str, set[str]] = field(default_factory=dict)  # source -> addresses
    refused_connections: int = 0
    legit_sent: int = 0
    legit_delivered: int = 0
    legit_deferred: int = 0
    legit_failed: int = 0
    legit_latency: list[float] = field(default_factory=list)


async def attacker(
    port: int, source: str, guesses: Iterator[str], stats: Stats, deadline: float
) -> None:
    pending: str | None = None
    while time.monotonic() < deadline:
        try:
            smtp = await Talk.open(port, source, timeout=40.0)
        except OSError:
            await asyncio.sleep(1)
            continue
        try:
            if not smtp.greeting.startswith(b"220"):
                stats.refused_connections += 1
                await asyncio.sleep(1)
                continue
            await smtp.command("EHLO harvester.test")
            await smtp.command("MAIL FROM:<offer@spam.test>")
            accepted = 0
            for _ in range(20):
                if time.monotonic() >= deadline:
                    break
                address = pending or next(guesses, None)
                pending = None
                if address is None:
                    return
                stats.sent += 1
                answer = await smtp.command(f"RCPT TO:<{address}>")
                if not answer:
                    stats.replies["closed"] += 1
                    pending = address  # not answered: try it again next session
                    break
                code = answer[:3].decode()
                stats.replies[code] += 1
                if code == "250":
                    accepted += 1
                    stats.confirmed.setdefault(source, set()).add(address)
                if answer[:3] == b"421" or code == "closed":
                    break
            if accepted and (await smtp.command("DATA")).startswith(b"354"):
                await smtp.command("Subject: offer\r\n\r\nbuy now\r\n.")
            with contextlib.suppress(Exception):
                await asyncio.wait_for(smtp.command("QUIT"), 2)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            smtp.abort()


async def legitimate(port: int, users: list[str], stats: Stats, deadline: float) -> None:
    rnd = random.Random(7)
    while time.monotonic() < deadline:
        start = time.monotonic()
        to = f"{rnd.choice(users)}@{DOMAIN}"
        stats.legit_sent += 1
        try:
            smtp = await Talk.open(port, "127.99.0.1", timeout=40.0)
            try:
                await smtp.command("EHLO partner.example")
                await smtp.command("MAIL FROM:<news@partner.example>")
                answer = await smtp.command(f"RCPT TO:<{to}>")
                if answer.startswith(b"250"):
                    await smtp.command("DATA")
                    answer = await smtp.command("Subject: hello\r\n\r\nregular mail\r\n.")
                await smtp.command("QUIT")
            finally:
                smtp.abort()
        except (OSError, TimeoutError):
            answer = b"4xx"
        if answer.startswith(b"250"):
            stats.legit_delivered += 1
            stats.legit_latency.append(time.monotonic() - start)
        elif answer.startswith(b"4"):
            stats.legit_deferred += 1
        else:
            stats.legit_failed += 1
        await asyncio.sleep(max(0.0, 0.25 - (time.monotonic() - start)))


def start_gateway(
    tmp: Path, sink_port: int, harvest: bool
) -> tuple[subprocess.Popen[bytes], int, Path]:
    port = free_port()
    cfg = tmp / f"mailmoat-{port}.toml"
    log = tmp / f"mailmoat-{port}.log"
    cfg.write_text(
        f"""
[server]
listen = ["127.0.0.1:{port}"]
hostname = "mx.bench.test"
[domains]
local = ["{DOMAIN}"]
[relay]
downstream = "127.0.0.1:{sink_port}"
[directory]
default = "static"
static_file = "{tmp / "recipients"}"
[harvest]
enabled = {str(harvest).lower()}
[dns]
# the simulation measures harvest defence; the DNS checks have bench/dns_checks.py
checks = false
[log]
format = "json"
level = "warning"
"""
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=open(log, "wb"),  # noqa: SIM115 (the child keeps it)
        env=env,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, port, log
        if proc.poll() is not None:
            raise SystemExit(f"gateway exited: {log.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("gateway did not start")


@dataclass
class Result:
    name: str
    stats: Stats
    elapsed: float
    sink: FakeDownstream
    valid: set[str]
    harvest_events: Counter[str]

    def row(self) -> dict[str, str]:
        s = self.stats
        confirmed = set().union(*s.confirmed.values()) if s.confirmed else set()
        answered = sum(v for k, v in s.replies.items() if k != "closed")
        invalid_down = sum(
            n for a, n in self.sink.recipients.items() if a.lower() not in self.valid
        )
        lat = statistics.median(s.legit_latency) if s.legit_latency else float("nan")
        per_source = max((len(v) for v in s.confirmed.values()), default=0)
        return {
            "scenario": self.name,
            "RCPTs sent": f"{s.sent:,}",
            "answered/s": f"{answered / self.elapsed:,.1f}",
            "250 / 550 / 4xx": (
                f"{s.replies['250']:,} / {s.replies['550']:,} / "
                f"{sum(v for k, v in s.replies.items() if k.startswith('4')):,}"
            ),
            "confirmed valid (max per source)": f"{len(confirmed & self.valid)} ({per_source})",
            "false 250s": str(len(confirmed - self.valid)),
            "refused connects": f"{s.refused_connections:,}",
            "downstream RCPTs (invalid)": f"{self.sink.recipients.total():,} ({invalid_down})",
            "legit delivered / sent": f"{s.legit_delivered} / {s.legit_sent}",
            "legit median s": f"{lat:.3f}",
            "bans (IP, net)": (
                f"{self.harvest_events['ban:ip']}, {self.harvest_events['ban:net']}"
            ),
        }


async def scenario(
    name: str,
    tmp: Path,
    sources: list[str],
    dictionary: list[str],
    users: list[str],
    duration: float,
    harvest: bool = True,
) -> Result:
    sink = await FakeDownstream(record=False).start()
    proc, port, log = await asyncio.to_thread(start_gateway, tmp, sink.port, harvest)
    stats = Stats()
    guesses = iter(dictionary)
    start = time.monotonic()
    deadline = start + duration
    try:
        legit = asyncio.create_task(legitimate(port, users, stats, deadline))
        workers = [attacker(port, src, guesses, stats, deadline) for src in sources]
        await asyncio.gather(*workers)
        elapsed = time.monotonic() - start
        legit_deadline = min(deadline, time.monotonic() + 5)  # a short tail when done early
        while time.monotonic() < legit_deadline and not legit.done():
            await asyncio.sleep(0.1)
        legit.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await legit
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 15)
        await sink.stop()
    events: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            doc = json.loads(line)
            if doc.get("event") == "harvest":
                events[f"{doc['action']}:{doc['source'].split(':')[0]}"] += 1
    return Result(name, stats, elapsed, sink, {f"{u}@{DOMAIN}" for u in users}, events)


def table(results: list[Result]) -> str:
    rows = [r.row() for r in results]
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(row[k] for k in keys) + " |" for row in rows]
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> None:
    rnd = random.Random(args.seed)
    taken: set[str] = set()
    users = names(rnd, args.users, taken)
    real = rnd.sample(users, args.real)
    dictionary = names(rnd, args.guesses - args.real, taken) + real
    rnd.shuffle(dictionary)
    dictionary = [f"{n}@{DOMAIN}" for n in dictionary]
    many = [f"127.20.{i % args.networks}.{i // args.networks + 1}" for i in range(args.ips)]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "recipients").write_text("".join(f"{u}@{DOMAIN}\n" for u in users))
        c = args.connections
        plan = [
            (f"no harvest detection, 1 IP, {c} connections", ["127.0.0.2"] * c, False),
            (f"1 IP, {c} connections", ["127.0.0.2"] * c, True),
            (f"{args.ips} IPs in {args.networks} /24s", many, True),
        ]
        results = []
        for name, sources, harvest in plan:
            print(f"running: {name} ({args.duration:g} s at most) ...", flush=True)
            results.append(
                await scenario(name, tmp, sources, dictionary, users, args.duration, harvest)
            )
    head = (
        f"{args.users:,} users; dictionary of {args.guesses:,} guesses containing {args.real} "
        f"real addresses; at most {args.duration:g} s a scenario; default harvest settings "
        f"(tarpit after 5, uniform 450 after 25, ban after 50 unknown per IP per hour; "
        f"20/100/200 per /24). Legitimate sender: one message every 0.25 s from another network.\n"
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}."
    )
    text = f"{head}\n\n{table(results)}\n"
    print()
    print(text)
    out = ROOT / "bench" / "results" / "harvest.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        "# Directory harvest simulation\n\nCommand: `python bench/harvest.py "
        + " ".join(sys.argv[1:])
        + "`\n\n"
        + text
    )
    print(f"written to {out.relative_to(ROOT)}")


def main() -> None:
    ap = argparse.ArgumentParser(description="Directory harvest simulation against mailmoat.")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--guesses", type=int, default=20000)
    ap.add_argument("--real", type=int, default=300, help="real addresses in the dictionary")
    ap.add_argument("--connections", type=int, default=20, help="parallel sessions from 1 IP")
    ap.add_argument("--ips", type=int, default=200, help="attacking IPs in the many-IP run")
    ap.add_argument("--networks", type=int, default=8, help="/24 networks they are spread over")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds per scenario at most")
    ap.add_argument("--seed", type=int, default=1)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
