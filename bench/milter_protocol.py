"""The milter's own cost per message, without Postfix or DNS: Postfix's packet sequence (macros
before each step, connect, HELO, MAIL, RCPT, each header, the body, the end of the message)
replayed over loopback against a milter service in a process of its own, with the DNS checks
off, so that what is measured is the protocol and the checks that need no network.

    python -m bench milter_protocol [--messages 3000] [--against /path/to/other/src]

`--against` measures a second source tree (another branch's `src`, e.g. main's) in the same
run, alternating with this one, and prints the ratio: the figure for a change to the
protocol code. Printed: the service process's CPU seconds per 1,000 messages.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
from pathlib import Path

from tests.support import milter_peer as mta
from tests.support.dns_gateway import message
from tests.support.milter_peer import MilterPeer

from bench.relay import cpu_seconds, stop_process
from mailmoat.milter.codec import P_NODATA, P_NOEOH, packet

SRC = Path(__file__).resolve().parent.parent / "src"
SERVE = """
import asyncio, signal
from mailmoat import config
from mailmoat.milter.service import MilterService

async def main():
    settings = config.load(None, {
        "server.hostname": "mx.example.test", "domains.local": ["example.test"],
        "milter.listen": "127.0.0.1:0", "dns.checks": False, "log.level": "warning",
        "admission.max_rate": 0})
    milter = MilterService(settings)
    await milter.start()
    print(milter.address[1], flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await milter.close()

asyncio.run(main())
"""


def fields(msg: bytes) -> tuple[list[tuple[str, bytes]], bytes]:
    """A message's header fields as Postfix sends them (value with its leading space, folds
    as bare LF) and its body."""
    head, body = msg.split(b"\r\n\r\n", 1)
    out: list[list[bytes]] = []
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t") and out:
            out[-1][1] += b"\n" + line
        else:
            name, _, value = line.partition(b":")
            out.append([name, value])
    return [(n.decode(), v) for n, v in out], body


async def connection(port: int, count: int, msg: bytes) -> None:
    """One SMTP connection's worth of milter packets: `count` messages."""
    headers, body = fields(msg)
    peer = await MilterPeer.open(port)
    try:
        _, steps = await peer.negotiate()
        await peer.send(mta.macros(b"C", j="mx.example.test", **{"{daemon_name}": "smtpd"}))
        await peer.ask(mta.connect("192.0.2.10"))
        await peer.send(mta.macros(b"H", **{"{tls_version}": ""}))
        await peer.ask(mta.strings(b"H", "mail.client.test"))
        for i in range(count):
            queue_id = f"4ABC{i}"
            await peer.send(mta.macros(b"M", i=queue_id, **{"{mail_addr}": "a@sender.test"}))
            await peer.ask(mta.strings(b"M", "<a@sender.test>", "SIZE=1000"))
            await peer.send(mta.macros(b"R", **{"{rcpt_addr}": "bob@example.test"}))
            await peer.ask(mta.strings(b"R", "<bob@example.test>"))
            if not steps & P_NODATA:
                await peer.send(mta.macros(b"T", i=queue_id))
                await peer.ask(packet(b"T"))
            await peer.send(*(mta.header(n, v) for n, v in headers))
            if not steps & P_NOEOH:
                await peer.send(mta.macros(b"N", i=queue_id), packet(b"N"))
            await peer.send(packet(b"B", body), mta.macros(b"E", i=queue_id))
            answer = await peer.ask(packet(b"E"))
            while answer[0] != b"c":  # header edits first
                answer = await peer.answer()
        await peer.send(packet(b"Q"))
    finally:
        await peer.close()


async def load(port: int, messages: int, concurrency: int = 8, per_conn: int = 5) -> None:
    msg = message("a@sender.test", body="Hello.\r\n" * 60)
    left = [messages // per_conn]

    async def client() -> None:
        while left[0] > 0:
            left[0] -= 1
            await connection(port, per_conn, msg)

    await asyncio.gather(*(client() for _ in range(concurrency)))


def measure(src: Path, messages: int) -> float:
    """CPU seconds per 1,000 messages of a milter service run from `src`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), str(SRC.parent)])}
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE], stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline() or 0)
        if not port:
            raise SystemExit(f"the milter from {src} did not start")
        asyncio.run(load(port, 40))  # warm-up
        cpu0 = cpu_seconds([proc.pid])
        asyncio.run(load(port, messages))
        return (cpu_seconds([proc.pid]) - cpu0) * 1000 / messages
    finally:
        stop_process(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--against", type=Path, help="another source tree, measured alike")
    args = parser.parse_args()
    trees = {"this tree": SRC}
    if args.against is not None:
        trees["--against"] = args.against.resolve()
    figures: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, src in trees.items():
            figures[name].append(measure(src, args.messages))
    print(f"{args.messages} messages x {args.rounds} rounds, 8 clients, 5 per connection")
    for name, values in figures.items():
        shown = " ".join(f"{v:.3f}" for v in values)
        print(f"  {name:<10} milter CPU {statistics.median(values):.3f} s/1000 (runs: {shown})")
    if args.against is not None:
        ours, theirs = (statistics.median(figures[n]) for n in trees)
        print(f"this tree vs --against: milter CPU per message {ours / theirs:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
