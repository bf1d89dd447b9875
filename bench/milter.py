"""What the integrated mode costs a Postfix: the same mail through Postfix alone, Postfix with
mailmoat's milter, and Postfix with OpenDKIM + OpenDMARC (Debian's) doing the same checks
(DKIM, SPF, DMARC; mailmoat adds iprev and HELO), in one run.

    python -m bench milter [--messages 300] [--concurrency 8] [--per-connection 5]
    python -m bench milter --profile FILE   # only Postfix + mailmoat, its process in cProfile

Needs root (a private Postfix, the milters' own users, a private mount namespace for the
milters' /etc/resolv.conf). Every peer runs on loopback: a private dnsmasq on
127.0.0.77:53 serves the test zone (tests/support/dns_zone.py) to all three milters (mailmoat
through dns.nameservers, OpenDKIM and OpenDMARC through a resolv.conf bind-mounted in their own
mount namespace: OpenDMARC has no setting for its name server). Each message is DKIM-signed
by sender.test and passes every check; one spoofed message first shows that both stacks
refuse a p=reject author. Printed: messages per second and latency of the end of DATA as
ratios against Postfix alone, and the milters' CPU seconds per 1,000 messages as a ratio
against OpenDKIM + OpenDMARC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.support import dns_zone as zone
from tests.support.dns_gateway import message, sign
from tests.support.ports import free_port, is_listening
from tests.support.postfix import PostfixInstance, new_instance
from tests.support.talk import Talk

from bench.relay import cpu_seconds, stop_process

DNS_IP = "127.0.0.77"
REPORT = Path(__file__).resolve().parent / "results" / "milter.md"
LINES: list[str] = []


def say(line: str) -> None:
    """Print a line of the report and keep it for bench/results/milter.md."""
    print(line, flush=True)
    LINES.append(line)


AUTHSERV = "mx.bench.test"
RCPT = "alice@example.test"


def load_average() -> str:
    """The machine's load average (1, 5, 15 minutes), as uptime shows it: the figures are
    only comparable within a run on a busy machine."""
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not is_listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start (exit {proc.poll()})")
        time.sleep(0.05)


@contextlib.contextmanager
def process(argv: list[str], port: int, what: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        wait_port(port, proc, what)
        yield proc
    finally:
        stop_process(proc)


def dnsmasq(work: Path) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    lines = [
        "port=53",
        f"listen-address={DNS_IP}",
        "bind-interfaces",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "log-facility=-",
        "local-ttl=3600",
        "local=/test/",
        "local=/in-addr.arpa/",
        *zone.records(),
    ]
    conf = work / "dnsmasq.conf"
    conf.write_text("\n".join(lines) + "\n")
    argv = [exe, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file="]
    return _udp_process(argv, work / "dnsmasq.log")


@contextlib.contextmanager
def _udp_process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True)
    try:
        time.sleep(0.3)  # dnsmasq binds at once; a failed bind exits
        if proc.poll() is not None:
            raise SystemExit(f"dnsmasq did not start: {log.read_text()}")
        yield proc
    finally:
        stop_process(proc)


def in_own_resolv(work: Path, argv: list[str]) -> list[str]:
    """`argv` run with /etc/resolv.conf naming the private dnsmasq (a private mount namespace)."""
    resolv = work / "resolv.conf"
    resolv.write_text(f"nameserver {DNS_IP}\noptions attempts:1 timeout:2\n")
    script = f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *argv]


def mailmoat_milter(
    work: Path, port: int, profile: Path | None = None
) -> contextlib.AbstractContextManager[Any]:
    conf = work / "mailmoat.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{free_port()}"]\nworkers = 1\nhostname = "{AUTHSERV}"\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{work / "md"}"\n'
        f'[dns]\nnameservers = ["{DNS_IP}:53"]\n[milter]\nlisten = "127.0.0.1:{port}"\n'
        '[log]\nlevel = "warning"\n'
        # one client address sends everything: no connection-rate limit (60 a minute)
        "[admission]\nmax_rate = 0\n"
    )
    argv = [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)]
    if profile is not None:  # written when the process ends (SIGTERM: a clean stop)
        argv[1:1] = ["-m", "cProfile", "-o", str(profile)]
    return process(argv, port, "mailmoat", work / "mailmoat.log")


def opendkim(work: Path, port: int) -> contextlib.AbstractContextManager[Any]:
    conf = work / "opendkim.conf"
    conf.write_text(
        f"Socket inet:{port}@127.0.0.1\nMode v\nAuthservID {AUTHSERV}\nUserID opendkim\n"
        "Syslog no\nCanonicalization relaxed/simple\n"
    )
    exe = shutil.which("opendkim") or "/usr/sbin/opendkim"
    argv = in_own_resolv(work, [exe, "-f", "-x", str(conf)])
    return process(argv, port, "opendkim", work / "opendkim.log")


def opendmarc(work: Path, port: int) -> contextlib.AbstractContextManager[Any]:
    conf = work / "opendmarc.conf"
    conf.write_text(
        f"Socket inet:{port}@127.0.0.1\nAuthservID {AUTHSERV}\nTrustedAuthservIDs {AUTHSERV}\n"
        "SPFSelfValidate true\nSPFIgnoreResults true\nRejectFailures true\nUserID opendmarc\n"
        "Syslog false\n"
    )
    exe = shutil.which("opendmarc") or "/usr/sbin/opendmarc"
    argv = in_own_resolv(work, [exe, "-f", "-c", str(conf)])
    return process(argv, port, "opendmarc", work / "opendmarc.log")


async def transaction(talk: Talk, sender: str, msg: bytes) -> tuple[bytes, float]:
    for line in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{RCPT}>", "DATA"):
        answer = await talk.command(line)
        if answer[:1] not in (b"2", b"3"):
            return answer, 0.0
    start = time.perf_counter()
    talk.writer.write(msg + b".\r\n")
    answer = await talk.reply()
    return answer, time.perf_counter() - start


async def one(port: int, sender: str, msg: bytes) -> bytes:
    talk = await Talk.open(port, source=zone.GOOD_IP, timeout=60)
    try:
        await talk.command(f"EHLO {zone.GOOD_HELO}")
        return (await transaction(talk, sender, msg))[0]
    finally:
        await talk.close()


async def load(port: int, total: int, concurrency: int, per_conn: int) -> tuple[float, list[float]]:
    """`total` signed messages over `concurrency` clients; (seconds, end-of-DATA latencies)."""
    msg = sign(message("a@sender.test", body="Hello.\r\n" * 60))
    left = [total]
    latencies: list[float] = []

    async def client() -> None:
        while left[0] > 0:
            talk = await Talk.open(port, source=zone.GOOD_IP, timeout=60)
            try:
                await talk.command(f"EHLO {zone.GOOD_HELO}")
                for _ in range(per_conn):
                    if left[0] <= 0:
                        break
                    left[0] -= 1
                    answer, took = await transaction(talk, "a@sender.test", msg)
                    if not answer.startswith(b"250"):
                        raise SystemExit(f"message refused: {answer!r}")
                    latencies.append(took)
                await talk.command("QUIT")
            finally:
                await talk.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def run_case(
    name: str, mx: PostfixInstance, pids: list[int], args: argparse.Namespace
) -> dict[str, float]:
    spoof = asyncio.run(one(mx.port, "bounce@strict.test", message("ceo@sender.test")))
    asyncio.run(load(mx.port, 20, 4, 5))  # warm-up: caches, connections, code paths
    cpu0 = cpu_seconds(pids)
    seconds, lat = asyncio.run(load(mx.port, args.messages, args.concurrency, args.per_connection))
    cpu = cpu_seconds(pids) - cpu0
    lat.sort()
    row = {
        "rate": args.messages / seconds,
        "p50": statistics.median(lat) * 1000,
        "p95": lat[int(len(lat) * 0.95) - 1] * 1000,
        "cpu": cpu * 1000 / args.messages,
    }
    say(
        f"  {name:<28} {row['rate']:7.1f} msg/s  p50 {row['p50']:6.1f} ms  "
        f"p95 {row['p95']:6.1f} ms  milter CPU {row['cpu']:5.2f} s/1000  spoof: {spoof[:9]!r}"
    )
    return row


def postfix_with(milters: list[int]) -> PostfixInstance:
    cf = {"milter_default_action": "tempfail", "smtpd_forbid_bare_newline": "reject"}
    if milters:
        cf["smtpd_milters"] = " ".join(f"inet:127.0.0.1:{p}" for p in milters)
    return new_instance("downstream", main_cf=cf, myhostname="mx.example.test").start()


def profile(args: argparse.Namespace) -> int:
    """Only the mailmoat case, its process run under cProfile (its figures are not the
    product's: the profiler slows it); read the file with `python -m pstats`."""
    work = Path(tempfile.mkdtemp(prefix="mailmoat-bench-milter-"))
    work.chmod(0o755)
    try:
        with dnsmasq(work):
            port = free_port()
            with mailmoat_milter(work, port, args.profile.resolve()) as proc:
                mx = postfix_with([port])
                try:
                    run_case("Postfix + mailmoat (cProfile)", mx, [proc.pid], args)
                finally:
                    mx.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"profile written to {args.profile}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--per-connection", type=int, default=5)
    parser.add_argument("--profile", type=Path, help="cProfile mailmoat into this file")
    args = parser.parse_args()
    if args.profile is not None:
        return profile(args)
    work = Path(tempfile.mkdtemp(prefix="mailmoat-bench-milter-"))
    work.chmod(0o755)
    rows: dict[str, dict[str, float]] = {}
    say(
        f"{args.messages} DKIM-signed messages, {args.concurrency} clients, "
        f"{args.per_connection} per connection; {os.cpu_count()} CPUs, {load_average()}"
    )
    try:
        with dnsmasq(work):
            mx = postfix_with([])
            try:
                rows["postfix"] = run_case("Postfix alone", mx, [], args)
            finally:
                mx.cleanup()
            port = free_port()
            with mailmoat_milter(work, port) as proc:
                mx = postfix_with([port])
                try:
                    rows["mailmoat"] = run_case("Postfix + mailmoat", mx, [proc.pid], args)
                finally:
                    mx.cleanup()
            kport, mport = free_port(), free_port()
            with opendkim(work, kport) as kproc, opendmarc(work, mport) as mproc:
                mx = postfix_with([kport, mport])
                try:
                    rows["peers"] = run_case(
                        "Postfix + OpenDKIM+OpenDMARC", mx, [kproc.pid, mproc.pid], args
                    )
                finally:
                    mx.cleanup()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base, ours, peers = rows["postfix"], rows["mailmoat"], rows["peers"]
    say(f"ratios (same run; at its end {load_average()}):")
    for key, label in (("mailmoat", "mailmoat"), ("peers", "OpenDKIM+OpenDMARC")):
        r = rows[key]
        say(
            f"  Postfix + {label:<20} throughput {r['rate'] / base['rate']:.2f}x of Postfix alone,"
            f" p50 latency {r['p50'] / base['p50']:.2f}x"
        )
    say(
        f"  mailmoat vs OpenDKIM+OpenDMARC: throughput {ours['rate'] / peers['rate']:.2f}x, "
        f"p50 latency {ours['p50'] / peers['p50']:.2f}x, "
        f"milter CPU per message {ours['cpu'] / peers['cpu']:.2f}x"
    )
    command = f"python -m bench milter {' '.join(sys.argv[1:])}".strip()
    REPORT.write_text(
        f"# Milter cost\n\n`{command}`, {time.strftime('%Y-%m-%d')}\n\n```\n"
        + "\n".join(LINES)
        + "\n```\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
