"""CPU time mailmoat spends per attack connection, supervisor and workers apart.

    python -m bench conn_cost                  # the combined attack's traffic, 15 s
    python -m bench conn_cost --traffic refused   # a flood that admission refuses whole
    python -m bench conn_cost --traffic mixed --connections 10000
    python -m bench conn_cost --seconds 10 --profile /tmp/prof

Starts `python -m mailmoat serve` with the attack harness's configuration (bench/attack.py:
defaults, log at info, one worker per CPU) and runs the attack workers of the combined
scenario (slowloris 5000 + flood 1000/s) without a legitimate sender, for a fixed time. It
reads utime+stime of the supervisor and of each worker from /proc/PID/stat before and after,
and divides by the connections mailmoat accepted meanwhile (its counter): unlike the p99 of
bench.attack, the figure hardly depends on how busy the machine is, so two builds measured
one after the other on a shared machine compare fairly.

How many of the combined attack's connections are refused depends on when the bans start,
which varies from run to run, and a refusal costs less than a session: `--traffic flood`
(the flood alone: mostly admitted, greeted and handed over) and `--traffic refused` (the
same flood from a denied network: every connection refused at accept) give the two costs
apart, and `--traffic mixed` runs both floods at once (a fixed mix at the combined attack's
rate of new connections). On a busy machine the niced attackers open fewer connections a
second, and costs that come once per address (a DNS lookup) weigh more: `--connections N`
runs a flood mix for a fixed number of connections, measured from before the first to after
the last, so two builds compare on the same work. With --profile DIR it runs `py-spy record`
on the supervisor and on one worker meanwhile (collapsed stacks, for any flame-graph tool).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.fake_downstream import FakeDownstream

from bench.attack import (
    CLK_TCK,
    LEGIT_NAMES,
    NICE,
    SCENARIOS,
    SINK_EXTENSIONS,
    Attack,
    Mailmoat,
    base_config,
    free_port,
)
from bench.peers import LegitDns


def cpu_of(pid: int) -> tuple[float, float]:
    """(utime, stime) of `pid` so far, seconds (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


COUNT_DEADLINE = 300.0
"""Seconds a --connections run may take at most."""


async def measure(
    seconds: float, ramp: float, profile: Path | None, traffic: str, count: int = 0
) -> dict[str, Any]:
    sink = await FakeDownstream(record=False, extensions=SINK_EXTENSIONS).start()
    combined = next(sc for sc in SCENARIOS if sc.key == "combined")
    with tempfile.TemporaryDirectory(prefix="mailmoat-cost-") as tmp:
        workdir = Path(tmp)
        dns = LegitDns(workdir, LEGIT_NAMES)
        dns_port = await asyncio.to_thread(dns.start)
        port = free_port()
        mm = Mailmoat(workdir, {}, port)
        mm.config = base_config(port, sink, mm.admin, dns_port)
        (flooding,) = [a for a in combined.attacks if a["kind"] == "flood"]
        denied = {**flooding, "sources": [16, *flooding["sources"][1:]]}  # from 127.16.0.0
        mm.config["admission"] = {"deny_networks": ["127.16.0.0/12"]}
        specs = {
            "combined": combined.attacks,
            "flood": [flooding],
            "refused": [denied],
            "mixed": [flooding, denied],
        }[traffic]
        attacks: list[Attack] = []
        spies: list[subprocess.Popen[bytes]] = []
        try:
            await mm.start()
            if count:  # measured from before the first connection to after the last
                pids = mm.pids()
                before = {pid: cpu_of(pid) for pid in pids}
                counters0 = (await mm.stats())["counters"]
                ramp, seconds = 0.0, COUNT_DEADLINE
            for spec in specs:
                extra = {"count": count // len(specs)} if count else {}
                duration = ramp + seconds
                attack = Attack({**spec, **extra, "port": port, "duration": duration, "nice": NICE})
                await attack.start()
                attacks.append(attack)
            if not count:
                await asyncio.sleep(ramp)
                pids = mm.pids()
                before = {pid: cpu_of(pid) for pid in pids}
                counters0 = (await mm.stats())["counters"]
            if profile is not None:
                spies = start_spies(profile, pids, seconds)
            t0 = time.monotonic()
            reports = [await a.result() for a in attacks]
            if count:
                await asyncio.sleep(1.0)  # the workers finish the last sessions
            wall = time.monotonic() - t0
            after = {pid: cpu_of(pid) for pid in pids}
            counters1 = (await mm.stats())["counters"]
        finally:
            for attack in attacks:
                attack.terminate()
            for spy in spies:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    spy.wait(30)
            await mm.stop()
            dns.stop()
            await sink.stop()
    errors = [r["error"] for r in reports if "error" in r]
    if errors:
        raise RuntimeError(f"attack workers failed: {errors}")
    delta = {k: counters1.get(k, 0) - counters0.get(k, 0) for k in counters1}
    used = {p: [a - b for a, b in zip(after[p], before[p], strict=True)] for p in pids}
    supervisor, workers = (
        used[pids[0]],
        [sum(u[i] for u in list(used.values())[1:]) for i in (0, 1)],
    )
    return {
        "wall": wall,
        "connections": delta.get("connections.accepted", 0),
        "refused": delta.get("closed.refused", 0),
        "handed": delta.get("sessions.handed_over", 0),
        "supervisor_cpu": sum(supervisor),
        "workers_cpu": sum(workers),
        "system_share": (supervisor[1] + workers[1]) / max(sum(supervisor) + sum(workers), 1e-9),
    }


def start_spies(out: Path, pids: list[int], seconds: float) -> list[subprocess.Popen[bytes]]:
    spy = shutil.which("py-spy") or str(Path(os.sys.executable).parent / "py-spy")
    out.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in (("supervisor", pids[0]), ("worker", pids[-1])):
        argv = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "200", "-f", "raw"]
        argv += ["-o", str(out / f"{name}.txt"), "--nonblocking"]
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time")
    parser.add_argument("--ramp", type=float, default=6.0, help="attack build-up, not measured")
    parser.add_argument("--profile", type=Path, help="directory for py-spy's collapsed stacks")
    parser.add_argument(
        "--connections",
        type=int,
        default=0,
        help="a fixed number of flood connections instead of a fixed time (not combined)",
    )
    parser.add_argument(
        "--traffic", choices=("combined", "flood", "refused", "mixed"), default="combined"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.connections and args.traffic == "combined":
        parser.error("--connections needs a flood-only --traffic (slowloris has no count)")
    r = asyncio.run(measure(args.seconds, args.ramp, args.profile, args.traffic, args.connections))
    n = max(r["connections"], 1)
    print(
        f"{r['connections']} attack connections in {r['wall']:.1f} s "
        f"(refused at connect {r['refused']}, "
        f"handed to workers {r['handed']})\n"
        f"CPU: supervisor {r['supervisor_cpu']:.2f} s, workers {r['workers_cpu']:.2f} s\n"
        f"per connection: supervisor {1e6 * r['supervisor_cpu'] / n:.0f} us, "
        f"workers {1e6 * r['workers_cpu'] / n:.0f} us, "
        f"total {1e6 * (r['supervisor_cpu'] + r['workers_cpu']) / n:.0f} us "
        f"({100 * r['system_share']:.0f}% of it in the kernel)"
    )


if __name__ == "__main__":
    main()
