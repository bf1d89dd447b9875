"""What mailmoat's policy service costs Postfix at RCPT, against Postfix alone, in one run.

    python -m bench policy              # 10 s a configuration
    python -m bench policy --quick      # 3 s

A private Postfix (the internal server: virtual mailboxes for 1,000 users) takes the same load
twice: alone (its own unknown-recipient check), then asking mailmoat's policy service at RCPT
(`check_policy_service`; a `mailmoat serve` process with `server.listen = []` and a static
directory of the same users). The load: `--clients` concurrent SMTP sessions, each EHLO, MAIL,
20 RCPTs one at a time (4 in 5 valid), QUIT, then a new session. Every RCPT of the second run
is one policy request (a new session also runs the connect stage). The harvest thresholds
are raised out of reach and the connection rate is off so that the load is measured, not
banned (the counting itself still runs). Prints RCPTs/s and RCPT latency of both, and the
ratios; writes them to bench/results/policy.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.ports import free_port, is_listening
from tests.support.postfix import new_instance
from tests.support.talk import Talk
from tests.support.waiting import wait_until

ROOT = Path(__file__).resolve().parent.parent
USERS = tuple(f"user{i}" for i in range(1000))
RCPTS = 20
HIGH = 1_000_000


async def _client(port: int, source: str, until: float, rnd: random.Random) -> list[float]:
    latencies = []
    while time.monotonic() < until:
        talk = await Talk.open(port, source, timeout=30)
        await talk.start_mail("client.sender.test", "s@sender.test")
        for _ in range(RCPTS):
            valid = rnd.random() < 0.8
            who = rnd.choice(USERS) if valid else f"nobody{rnd.randrange(10**6)}"
            answer, took = await talk.timed(f"RCPT TO:<{who}@example.test>")
            assert answer[:1] == (b"2" if valid else b"5"), answer
            latencies.append(took)
        await talk.command("QUIT")
        await talk.close()
    return latencies


async def _load(port: int, clients: int, duration: float) -> tuple[float, list[float]]:
    until = time.monotonic() + duration
    started = time.monotonic()
    results = await asyncio.gather(
        *(_client(port, f"127.0.2.{i + 1}", until, random.Random(i)) for i in range(clients))
    )
    elapsed = time.monotonic() - started
    latencies = [x for r in results for x in r]
    return len(latencies) / elapsed, latencies


def _serve_policy(work: Path, port: int) -> subprocess.Popen[bytes]:
    users = work / "users"
    users.write_text("".join(f"{u}@example.test\n" for u in USERS))
    conf = work / "mailmoat.toml"
    conf.write_text(
        f'[server]\nlisten = []\nhostname = "mx.mailmoat.test"\n'
        f'[domains]\nlocal = ["example.test"]\n'
        f'[directory]\ndefault = "static"\nstatic_file = "{users}"\n'
        f"[admission]\nmax_rate = 0\n"
        f"[harvest]\ntarpit_after = {HIGH}\nthreshold = {HIGH}\nban_after = {HIGH}\n"
        f"network_tarpit_after = {HIGH}\nnetwork_threshold = {HIGH}\n"
        f"network_ban_after = {HIGH}\nsession_max_unknown = {HIGH}\n"
        f'[dns]\nchecks = false\n[log]\nlevel = "warning"\n'
        f'[policy]\nlisten = "127.0.0.1:{port}"\n'
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)],
        env=env,
        start_new_session=True,
    )
    wait_until(lambda: is_listening(port), "the policy service to listen", timeout=30)
    return proc


def _row(name: str, rate: float, lat: list[float], base: float, base_p50: float) -> str:
    p50 = statistics.median(lat) * 1000
    p99 = statistics.quantiles(lat, n=100)[98] * 1000
    return (
        f"| {name} | {rate:,.0f} | {rate / base:.2f} | {p50:.2f} | {p50 / base_p50:.2f} |"
        f" {p99:.2f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds a configuration")
    parser.add_argument("--clients", type=int, default=4, help="concurrent SMTP sessions")
    parser.add_argument("--quick", action="store_true", help="3 s a configuration")
    args = parser.parse_args()
    duration = 3.0 if args.quick else args.duration

    work = Path(tempfile.mkdtemp(prefix="mailmoat-bench-policy-"))
    policy_port = free_port()
    postfix = new_instance(
        "downstream",
        users=USERS,
        main_cf={
            "smtpd_error_sleep_time": "0",
            "smtpd_soft_error_limit": "1000",
            "smtpd_hard_error_limit": "1000",
        },
    )
    proc = None
    try:
        postfix.start()
        alone_rate, alone = asyncio.run(_load(postfix.port, args.clients, duration))
        proc = _serve_policy(work, policy_port)
        postfix.reconfigure(
            smtpd_recipient_restrictions="reject_unauth_destination,"
            f" check_policy_service inet:127.0.0.1:{policy_port}"
        )
        with_rate, with_policy = asyncio.run(_load(postfix.port, args.clients, duration))
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        postfix.cleanup()

    base_p50 = statistics.median(alone)
    lines = [
        f"Postfix RCPTs with and without mailmoat's policy service ({platform.node()},"
        f" {os.cpu_count()} cores, {args.clients} clients, {duration:g} s each,"
        f" `python -m bench policy{' --quick' if args.quick else ''}`)",
        "",
        "| configuration | RCPT/s | ratio | p50 ms | p50 ratio | p99 ms |",
        "|---|---|---|---|---|---|",
        _row("Postfix alone", alone_rate, alone, alone_rate, base_p50 * 1000),
        _row("Postfix + policy service", with_rate, with_policy, alone_rate, base_p50 * 1000),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "bench" / "results" / "policy.md").write_text(text)
    return 0
