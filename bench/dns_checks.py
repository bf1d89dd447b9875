"""Latency of the DNS checks, with the DNS cache cold and warm.

    python bench/dns_checks.py              # 200 rounds per figure
    python bench/dns_checks.py --rounds 50

A private dnsmasq on 127.0.0.1 serves the test zones of tests/support/dns_zone.py (install dnsmasq:
`apt-get install dnsmasq-base`). Two parts:

1. each check on its own, as the gateway runs it: FCrDNS (PTR + A/AAAA), HELO (A/AAAA), two DNS
   lists, SPF (TXT, MX, A, an include), DKIM (key lookup + verification of a signed message),
   DMARC (policy lookup + evaluation). "cold": the resolver cache (and the per-client DNS list
   result) emptied before every round, so every lookup goes to the server; "warm": answered
   from the cache.
2. a whole SMTP transaction (EHLO, MAIL, RCPT, DATA with a DKIM-signed message, QUIT) through a
   real gateway to a fake downstream, with the checks off, on with a cold cache, on with a warm
   one.

The server is on loopback, so "cold" is the cost of our side of a lookup (a query, an answer,
the parsing) plus a loopback round trip; on the Internet each cold lookup adds the network
round trip to the resolver, which the early start of the lookups (at connect, HELO and MAIL)
hides behind the SMTP dialogue. Prints a table and writes it to bench/results/dns_checks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from ipaddress import ip_address
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.support import dns_zone as zone  # noqa: E402
from tests.support.dns_gateway import dns_gateway, message, sign  # noqa: E402
from tests.support.dnsmasq import Dnsmasq  # noqa: E402

from mailmoat import config, logs  # noqa: E402
from mailmoat.dns import Resolver  # noqa: E402
from mailmoat.message import Envelope, Message, Spool  # noqa: E402
from mailmoat.policy.dkim import DkimVerifier  # noqa: E402
from mailmoat.policy.dmarc import evaluate  # noqa: E402
from mailmoat.policy.dnsbl import DnsLists  # noqa: E402
from mailmoat.policy.fcrdns import iprev  # noqa: E402
from mailmoat.policy.helo import HeloCheck  # noqa: E402
from mailmoat.policy.score import Karma  # noqa: E402
from mailmoat.policy.spf import SpfEvaluator  # noqa: E402
from mailmoat.store import MemoryStore  # noqa: E402


def ms(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
    return statistics.median(values) * 1000, p95 * 1000


async def timed(
    rounds: int, work: Callable[[], Awaitable[Any]], before: Callable[[], Any] | None = None
) -> list[float]:
    out = []
    for _ in range(rounds):
        if before is not None:
            r = before()
            if asyncio.iscoroutine(r):
                await r
        start = time.perf_counter()
        await work()
        out.append(time.perf_counter() - start)
    return out


Row = tuple[str, str, list[float], list[float]]


async def per_check(server: Dnsmasq, rounds: int) -> list[Row]:
    settings = config.build(
        {
            "dns": {"nameservers": [server.address]},
            "dnsbl": {"lists": ["bl.test*2", "wl.test*-1"]},
        }
    )
    r = Resolver(settings.dns)
    store = MemoryStore()
    lists = DnsLists(settings.dnsbl, r, store)
    helo = HeloCheck(settings.helo, r, Karma(settings.score), ["mx.mailmoat.test"])
    spf = SpfEvaluator(r)
    dkim = DkimVerifier(r, workers=2)
    signed = sign(message())
    spool = Spool()
    spool.write(signed)
    msg = Message(Envelope("a@sender.test"), spool, "BENCH")
    good = ip_address(zone.GOOD_IP)
    spf_results = await _spf_results(spf)

    async def cold() -> None:
        r.clear()
        await store.close()

    cases: list[tuple[str, str, Callable[[], Awaitable[Any]]]] = [
        ("fcrdns", "PTR, A, AAAA", lambda: iprev(r, good)),
        ("helo", "A, AAAA", lambda: helo.evaluate(zone.GOOD_HELO, good)),
        ("dnsbl (2 lists)", "A per list", lambda: lists.lookup(ip_address(zone.LISTED_IP))),
        (
            "spf mail from (mx + include)",
            "TXT, MX, A, TXT",
            lambda: spf.check("127.0.0.9", "a@sender.test", zone.GOOD_HELO),
        ),
        ("dkim (2048-bit RSA)", "TXT key", lambda: dkim.verify(msg)),
        ("dmarc", "TXT", lambda: evaluate(r, "sender.test", spf_results, [])),
    ]
    rows = []
    for name, lookups, work in cases:
        await work()  # imports, first-use costs
        cold_t = await timed(rounds, work, cold)
        await work()
        warm_t = await timed(rounds, work)
        rows.append((name, lookups, cold_t, warm_t))
    dkim.close()
    return rows


async def _spf_results(spf: SpfEvaluator) -> Any:
    from mailmoat.policy.results import SpfResults

    return SpfResults(await spf.check(zone.GOOD_IP, "a@sender.test", zone.GOOD_HELO), None)


async def end_to_end(server: Dnsmasq, rounds: int) -> list[tuple[str, list[float]]]:
    signed = sign(message())
    rows = []
    async with dns_gateway(server.address, **{"dns.checks": False}) as gw:
        await gw.send(msg=signed)
        rows.append(("checks off", await timed(rounds, lambda: gw.send(msg=signed))))
    extra = {"dnsbl.lists": ["bl.test*2", "wl.test*-1"]}
    async with dns_gateway(server.address, **extra) as gw:
        resolver = next(c.resolver for c in gw.gateway.pipeline.checks if hasattr(c, "resolver"))

        async def cold() -> None:
            resolver.clear()
            await gw.gateway.store.delete(f"dnsbl:{zone.GOOD_IP}")

        for _ in range(3):
            out = await gw.send(msg=signed)
            assert out.code("message") == 250, out.replies
        send = lambda: gw.send(msg=signed)  # noqa: E731
        rows.append(("all checks, cold cache", await timed(rounds, send, cold)))
        rows.append(("all checks, warm cache", await timed(rounds, send)))
    return rows


def table(
    checks: list[Row],
    e2e: list[tuple[str, list[float]]],
    rounds: int,
) -> str:
    lines = [
        f"{rounds} rounds per figure; dnsmasq on 127.0.0.1; median and 95th percentile in ms.",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}.",
        "",
        "| check | lookups | cold median | cold p95 | warm median | warm p95 |",
        "|---|---|---|---|---|---|",
    ]
    for name, lookups, cold, warm in checks:
        c, w = ms(cold), ms(warm)
        lines.append(f"| {name} | {lookups} | {c[0]:.2f} | {c[1]:.2f} | {w[0]:.2f} | {w[1]:.2f} |")
    lines += [
        "",
        "| SMTP transaction (EHLO to QUIT, signed message) | median | p95 |",
        "|---|---|---|",
    ]
    for name, values in e2e:
        m = ms(values)
        lines.append(f"| {name} | {m[0]:.2f} | {m[1]:.2f} |")
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()
    logs.setup(config.LogSettings(level="error"))
    server = Dnsmasq(Path(tempfile.mkdtemp(prefix="bench-dns-")), zone.records())
    server.log = Path(os.devnull)  # no query log to grow
    server.start()
    try:
        checks = await per_check(server, args.rounds)
        e2e = await end_to_end(server, args.rounds)
    finally:
        server.stop()
    text = table(checks, e2e, args.rounds)
    print(text)
    out = ROOT / "bench" / "results" / "dns_checks.md"
    out.write_text("# DNS checks: latency with the cache cold and warm\n\n" + text)
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
