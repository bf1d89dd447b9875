"""Throughput of the sans-IO SMTP engine alone: messages through one `ServerConnection`.

    python -m bench engine [--messages 10000] [--size 10240] [--repeat 5] [--against SRC]

One session, EHLO once, then per message MAIL, RCPT, DATA (each answered with `accept()`),
the content in reads of at most 64 KiB, and the end of data. The content is plain text in
76-octet lines with a few dot-stuffed ones, as mail usually is. No socket, no event loop:
only the engine's own cost, in CPU seconds (process time: other processes on a busy machine
do not count). `--against SRC` runs the same measure, interleaved, on another
source tree (for example `git worktree add /tmp/before main` then `--against /tmp/before/src`)
and prints the ratio. The limits come from `offered_limits`, as a session gets them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

READ = 64 * 1024


def content(size: int) -> bytes:
    """`size` octets of message: a header block, then 76-octet lines, one in 20 dot-stuffed."""
    head = b"From: a@example.org\r\nTo: b@example.test\r\nSubject: bench\r\n\r\n"
    lines = [head]
    total = len(head)
    i = 0
    while total < size:
        line = (b".." if i % 20 == 19 else b"") + b"x" * 74 + b"\r\n"
        lines.append(line)
        total += len(line)
        i += 1
    return b"".join(lines)[:size].rstrip(b"\r\n.") + b"\r\n"


def measure(messages: int, size: int) -> float:
    """Seconds to pass `messages` messages of `size` octets through one engine."""
    from mailmoat.config import SmtpSettings
    from mailmoat.relay.capabilities import offered_limits
    from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, ServerConnection
    from mailmoat.smtp.events import Command, MessageEnd

    body = content(size)
    reads = [body[i : i + READ] for i in range(0, len(body), READ)] + [b".\r\n"]
    conn = ServerConnection(offered_limits(SmtpSettings(), None), "mx.test")
    conn.greeting()
    stops = (NEED_DATA, PAUSED, CLOSED)
    ends = 0

    def feed(data: bytes) -> None:
        nonlocal ends
        conn.receive_data(data)
        while (ev := conn.next_event()) not in stops:
            if isinstance(ev, Command):
                conn.accept()
                ends += type(ev) is MessageEnd
        conn.data_to_send()

    feed(b"EHLO client.example\r\n")
    started = time.process_time()
    for _ in range(messages):
        feed(b"MAIL FROM:<alice@example.org>\r\n")
        feed(b"RCPT TO:<bob@example.test>\r\n")
        feed(b"DATA\r\n")
        for piece in reads:
            feed(piece)
    elapsed = time.process_time() - started
    if ends != messages:
        raise SystemExit(f"{ends} of {messages} messages ended")
    return elapsed


def _child(src: str, messages: int, size: int) -> float:
    env = dict(os.environ, PYTHONPATH=src)
    argv = [sys.executable, "-m", "bench.engine", "--child", str(messages), str(size)]
    out = subprocess.run(argv, env=env, check=True, capture_output=True, text=True).stdout
    return float(json.loads(out)["seconds"])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench engine", description=__doc__)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=10 * 1024)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--against", metavar="SRC", help="another source tree to compare with")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"seconds": measure(*args.child)}))
        return 0
    here = os.environ.get("PYTHONPATH", "")
    trees = {"this": here} | ({"against": args.against} if args.against else {})
    times: dict[str, list[float]] = {name: [] for name in trees}
    order = list(trees)
    for _ in range(args.repeat):  # interleaved, the order swapped: noise falls on both alike
        for name in order:
            times[name].append(_child(trees[name], args.messages, args.size))
        order.reverse()
    for name, got in times.items():
        best = min(got)
        mib = args.messages * args.size / best / 2**20
        print(
            f"{name:8} {trees[name] or '(installed)'}: best {best:.3f} s, median "
            f"{statistics.median(got):.3f} s, {args.messages / best:,.0f} msg/s, {mib:.0f} MiB/s"
        )
    if args.against:
        ratio = min(times["this"]) / min(times["against"])
        print(f"ratio this/against (best times): {ratio:.3f} (below 1: this is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
