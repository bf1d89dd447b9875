"""A connection flood from 200 banned addresses: mailmoat's CPU and a legitimate sender's p99,
with the packet filter (nftables) against without it, in one run.

    python -m bench packetfilter                 # 10 s per mode, 2000 connections/s, 10 msg/s
    python -m bench packetfilter --seconds 20 --rate 4000

Needs root (a network namespace of its own, nftables). The whole run happens inside a fresh
namespace (`ip netns add`; this process joins it, so mailmoat, nft and every socket are
there), removed at the end. For each mode it starts `python -m mailmoat serve` (one process,
`server.workers = 1`, Maildir delivery, no connection-rate limit so the legitimate sender is
never refused), bans 127.0.1.1-200 through the admin endpoint and, for the filter, waits
until the kernel holds the 200 elements. Then, for `--seconds`, the flood opens `--rate`
connections a second round-robin from those addresses (each abandoned after 0.5 s), while a
legitimate sender on 127.0.0.2 sends `--legit` messages a second (connect, EHLO, MAIL, RCPT,
DATA, QUIT; the next at once when one is late) and times each. mailmoat's CPU is utime+stime
from /proc/PID/stat over the flood. The report goes to stdout and
bench/results/packetfilter.md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.netns import CLONE_NEWNET

from mailmoat.server.admin import bans_path, fetch, request

PORT = 2525
BANNED = [f"127.0.1.{i}" for i in range(1, 201)]
LEGIT = "127.0.0.2"
TABLE = "mmbench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
RESULTS = Path(__file__).resolve().parent / "results" / "packetfilter.md"


def join(name: str) -> None:
    """Move this process (its main thread: every later socket and child) into netns `name`."""
    libc = ctypes.CDLL(None, use_errno=True)
    with open(f"/run/netns/{name}", "rb") as ns:
        if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")


def cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def serve(tmp: Path, backend: str) -> tuple[subprocess.Popen[bytes], Path]:
    admin = tmp / f"admin-{backend}.sock"
    config = tmp / f"{backend}.toml"
    config.write_text(
        f"""[server]
listen = ["127.0.0.1:{PORT}"]
hostname = "mx.example.test"
workers = 1
drain_time = 0
[domains]
local = ["example.test"]
[maildir]
path = "{tmp / "Maildir"}"
[admin]
listen = "{admin}"
[dns]
checks = false
[admission]
max_rate = 0
[log]
level = "warning"
[packetfilter]
backend = "{backend}"
table = "{TABLE}"
"""
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / f"{backend}.log", "wb"),  # noqa: SIM115 (the child holds it)
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            fetch(str(admin))
            return proc, admin
        except (OSError, ValueError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit((tmp / f"{backend}.log").read_text()) from None
            time.sleep(0.1)


async def flood(rate: int, seconds: float) -> int:
    """Open `rate` connections a second from the banned addresses; returns how many."""
    loop = asyncio.get_running_loop()
    open_: collections.deque[tuple[float, socket.socket]] = collections.deque()
    opened, start = 0, loop.time()
    while (now := loop.time()) < start + seconds:
        due = int((now - start) * rate)
        while opened < due:
            sock = socket.socket()
            sock.setblocking(False)
            sock.bind((BANNED[opened % len(BANNED)], 0))
            sock.connect_ex(("127.0.0.1", PORT))
            open_.append((now + 0.5, sock))
            opened += 1
        while open_ and open_[0][0] <= now:
            open_.popleft()[1].close()
        await asyncio.sleep(0.005)
    for _, sock in open_:
        sock.close()
    return opened


async def legit(stop: asyncio.Event, rate: float) -> list[float]:
    """Send `rate` messages a second from LEGIT (the next at once when one is late) until
    `stop`; each one's seconds. A fixed pace gives mailmoat the same legitimate work in both
    modes, so the CPU figures differ by what the flood costs."""
    times: list[float] = []
    start = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(max(0.0, start + len(times) / rate - time.perf_counter()))
        began = time.perf_counter()
        reader, writer = await asyncio.open_connection("127.0.0.1", PORT, local_addr=(LEGIT, 0))
        for line in (None, b"EHLO legit.example\r\n", b"MAIL FROM:<a@legit.example>\r\n",
                     b"RCPT TO:<user@example.test>\r\n", b"DATA\r\n",
                     b"Subject: t\r\n\r\nhello\r\n.\r\n", b"QUIT\r\n"):  # fmt: skip
            if line is not None:
                writer.write(line)
            while True:
                reply = await reader.readline()
                if not reply or reply[3:4] != b"-":
                    break
            assert reply[:1] in (b"2", b"3"), reply
        writer.close()
        times.append(time.perf_counter() - began)
    return times


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


async def measure(
    tmp: Path, backend: str, rate: int, seconds: float, legit_rate: float
) -> dict[str, float]:
    proc, admin = serve(tmp, backend)
    try:
        for addr in BANNED:
            status, body = request(str(admin), bans_path(addr, 3600), method="POST")
            assert status == 200, body
        if backend == "nftables":
            while fetch(str(admin))["gauges"].get("packetfilter.elements") != len(BANNED):  # type: ignore[union-attr]
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        stop = asyncio.Event()
        sender = asyncio.create_task(legit(stop, legit_rate))
        before = cpu(proc.pid)
        opened = await flood(rate, seconds)
        used = cpu(proc.pid) - before
        stop.set()
        times = await sender
        counters = fetch(str(admin))["counters"]
        return {
            "cpu": used / seconds,
            "opened": opened / seconds,
            "refused": counters.get("closed.refused", 0) / seconds,  # type: ignore[union-attr]
            "p50": pct(times, 0.5) * 1000,
            "p99": pct(times, 0.99) * 1000,
            "messages": len(times) / seconds,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=2000, help="flood connections a second")
    parser.add_argument("--legit", type=float, default=10.0, help="legitimate messages a second")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (a network namespace and nftables)")
    name = f"mm-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        join(name)
        with tempfile.TemporaryDirectory() as tmp:
            rows = {
                mode: asyncio.run(measure(Path(tmp), mode, args.rate, args.seconds, args.legit))
                for mode in ("none", "nftables")
            }
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
    off, on = rows["none"], rows["nftables"]
    lines = [
        f"# Packet filter: flood from {len(BANNED)} banned addresses",
        "",
        f"`python -m bench packetfilter --seconds {args.seconds:g} --rate {args.rate}"
        f" --legit {args.legit:g}`"
        f" ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs)",
        "",
        "| | without filter | with nftables | with / without |",
        "|---|---|---|---|",
    ]
    for key, label in (
        ("opened", "flood connections opened / s"),
        ("refused", "refused by mailmoat (421) / s"),
        ("cpu", "mailmoat CPU (s per s)"),
        ("messages", "legitimate messages / s"),
        ("p50", "legitimate message p50 (ms)"),
        ("p99", "legitimate message p99 (ms)"),
    ):
        ratio = on[key] / off[key] if off[key] else float("nan")
        lines.append(f"| {label} | {off[key]:.3f} | {on[key]:.3f} | {ratio:.2f} |")
    report = "\n".join(lines) + "\n"
    print(report)
    RESULTS.write_text(report)


if __name__ == "__main__":
    main()
