"""Memory of many sessions in DATA: 1,000 clients each send 255 KB of message data and hold
on before the final dot, against a real `mailmoat serve`, once per budget.

    python -m bench spool_memory                      # budgets 64 MiB and 1 GiB, 1,000 sessions
    python -m bench spool_memory --budgets 64,256 --sessions 600 --workers 1

For each budget (server.spool_memory_total, in MiB) it starts `python -m mailmoat serve` from
this worktree (its stats endpoint on a unix socket, a Maildir in a temporary directory), reads
the resident memory of the supervisor and its workers, opens the sessions from 100 loopback
addresses (within the default per-address, per-network and rate limits), sends every body
but the final dot, waits until mailmoat has read it all (its memory stops growing), reads the
memory again, then ends every message and counts the 250 replies (nothing lost). It prints a
Markdown table and writes it to bench/results/spool_memory.md.

Every process it starts is stopped by its process id; the whole run has a deadline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

from bench.attack import Mailmoat

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024
LINE = b"x" * 78 + b"\r\n"
SOURCES = [f"127.0.{20 + n // 5}.{n % 5 + 1}" for n in range(100)]
"""100 addresses in 20 /24s: 10 sessions each, within admission.max_per_ip (20),
max_per_network (100) and max_rate (60 a minute)."""


@dataclass
class Result:
    budget_mib: int
    workers: int
    sessions: int
    opened: int
    rss_before: int  # KiB, all of mailmoat's processes
    rss_held: int
    spool_memory: int  # the gauge: message bytes in memory, node-wide
    delivered: int
    seconds: float


def body(size: int) -> bytes:
    head = b"Subject: spool memory\r\n\r\n"
    return head + LINE * ((size - len(head)) // len(LINE))


async def reply(reader: asyncio.StreamReader) -> bytes:
    out = b""
    while True:
        line = await reader.readline()
        out += line
        if not line or line[3:4] != b"-":
            return out


async def open_session(
    port: int, source: str, data: bytes
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Greeting to DATA, then the body without the final dot; None if mailmoat refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    if not (await reply(reader)).startswith(b"220"):
        writer.close()
        return None
    for line, code in (
        (b"EHLO bench.test", b"250"),
        (b"MAIL FROM:<s@bench.test>", b"250"),
        (b"RCPT TO:<alice@example.test>", b"250"),
        (b"DATA", b"354"),
    ):
        writer.write(line + b"\r\n")
        if not (await reply(reader)).startswith(code):
            writer.close()
            return None
    writer.write(data)
    await writer.drain()
    return reader, writer


async def finish(session: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> bool:
    reader, writer = session
    writer.write(b".\r\n")
    ok = (await reply(reader)).startswith(b"250")
    writer.write(b"QUIT\r\n")
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    return ok


async def settle(mm: Mailmoat, deadline: float) -> int:
    """mailmoat's RSS once it stopped growing for 2 s (it has read what the clients sent)."""
    last, still = mm.rss_kib(), 0
    while still < 8 and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        now = mm.rss_kib()
        still = still + 1 if abs(now - last) < 256 else 0
        last = now
    return last


async def run_one(budget_mib: int, args: argparse.Namespace, tmp: Path) -> Result:
    port = free_port()
    wd = tmp / f"budget-{budget_mib}"
    wd.mkdir()
    mm = Mailmoat(wd, {}, port)
    mm.config = {
        "server": {
            "listen": [f"127.0.0.1:{port}"],
            "hostname": "mx.bench.test",
            "workers": args.workers,
            "spool_memory_total": budget_mib * MiB,
        },
        "domains": {"local": ["example.test"]},
        "maildir": {"path": str(wd / "Maildir")},
        "dns": {"checks": False},
        "admin": {"listen": mm.admin},
        "log": {"level": "warning"},
    }
    data = body(args.size)
    started = time.monotonic()
    deadline = started + args.budget / 2
    await mm.start()
    sessions: list[Any] = []
    try:
        await asyncio.sleep(1.0)  # the workers are up; let the processes settle
        rss_before = mm.rss_kib()
        batch = 50
        for start in range(0, args.sessions, batch):
            opened = await asyncio.gather(
                *(
                    open_session(port, SOURCES[n % len(SOURCES)], data)
                    for n in range(start, min(start + batch, args.sessions))
                ),
                return_exceptions=True,
            )
            sessions += [s for s in opened if s is not None and not isinstance(s, BaseException)]
        rss_held = await settle(mm, deadline)
        gauges = (await mm.stats())["gauges"]
        done = await asyncio.gather(*(finish(s) for s in sessions), return_exceptions=True)
        delivered = sum(1 for ok in done if ok is True)
        return Result(
            budget_mib, args.workers, args.sessions, len(sessions), rss_before, rss_held,
            int(gauges.get("spool.memory", 0)), delivered, time.monotonic() - started,
        )  # fmt: skip
    finally:
        for _, writer in sessions:
            writer.transport.abort()
        await mm.stop()


def render(results: list[Result], args: argparse.Namespace) -> str:
    out = [
        "# Many sessions in DATA: mailmoat's memory against its spool budget",
        "",
        f"`python -m bench spool_memory {' '.join(sys.argv[1:])}` on {platform.node()}: "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}; loopback only. "
        f"{args.sessions} sessions each send {args.size:,} bytes of message data and hold on "
        "before the final dot; RSS is the sum over the supervisor and its workers "
        f"(server.workers = {args.workers}, 0 = one per core). Load average at the end "
        f"{', '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| server.spool_memory_total | sessions held | RSS before MiB | RSS with the "
        "sessions MiB | growth per session KiB | message data in memory MiB (gauge) | "
        "under the budget | delivered after the dot | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        growth = (r.rss_held - r.rss_before) / max(r.opened, 1)
        in_memory = r.spool_memory / MiB
        out.append(
            f"| {r.budget_mib} MiB | {r.opened}/{r.sessions} | {r.rss_before / 1024:.0f} | "
            f"{r.rss_held / 1024:.0f} | {growth:.0f} | {in_memory:.1f} | "
            f"{'yes' if r.spool_memory <= r.budget_mib * MiB else 'NO'} | "
            f"{r.delivered}/{r.opened} | {r.seconds:.0f} |"
        )
    out.append("")
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> str:
    results = []
    with tempfile.TemporaryDirectory(prefix="mailmoat-spool-") as tmp:
        for budget in args.budgets:
            print(f"== budget {budget} MiB, {args.sessions} sessions", file=sys.stderr)
            results.append(await run_one(budget, args, Path(tmp)))
            print(render(results[-1:], args).splitlines()[-1], file=sys.stderr)
    return render(results, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--size", type=int, default=255_000, help="message bytes per session")
    parser.add_argument(
        "--budgets",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[64, 1024],
        help="server.spool_memory_total values to run, MiB, comma-separated",
    )
    parser.add_argument("--workers", type=int, default=0, help="server.workers (0 = per core)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--budget", type=float, default=600, help="hard limit for the run (s)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = asyncio.run(asyncio.wait_for(main_async(args), args.budget))
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "spool_memory.md").write_text(report)
    print(f"written to {args.out / 'spool_memory.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
