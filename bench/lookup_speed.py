"""How many recipient checks per second the in-memory directory answers.

    python bench/lookup_speed.py [--users 2000] [--checks 200000]

Three figures, half of the addresses valid and half not:
  directory  Directories.lookup() on a static file's AddressSet (the lookup itself)
  rcpt check the RCPT stage of the pipeline (relay access + recipient check), no harvest check
  + harvest  the same with the harvest check and its MemoryStore counters (async, as in the
             gateway's default set-up, from one client that stays under the thresholds)
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import random
import sys
import tempfile
import time
from pathlib import Path

from mailmoat import config, logs
from mailmoat.directory.base import Directories
from mailmoat.directory.static import StaticDirectory
from mailmoat.policy.base import Client, Pipeline
from mailmoat.policy.harvest import HarvestCheck, HarvestDetector
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.policy.relay_access import RelayAccess
from mailmoat.smtp.events import RcptTo
from mailmoat.store import MemoryStore


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:>12,.0f} checks/s"


async def run(users: int, checks: int) -> dict[str, float]:
    rnd = random.Random(4)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "recipients"
        names = [f"user{i:06d}.{rnd.randrange(10**6)}" for i in range(users)]
        path.write_text("".join(f"{n}@example.test\n" for n in names))
        static = StaticDirectory(path, max_entries=max(users, 1))
        dirs = Directories({"example.test": static}, always_valid=["postmaster"])
        await dirs.start()
    valid = [f"{n}@example.test" for n in rnd.sample(names, min(users, 1000))]
    invalid = [f"guess{i}.{rnd.randrange(10**6)}@example.test" for i in range(1000)]
    addresses = [a for pair in zip(valid, invalid, strict=False) for a in pair]
    events = [RcptTo(a, "example.test") for a in addresses]
    n = len(addresses)
    out: dict[str, float] = {}

    start = time.perf_counter()
    for i in range(checks):
        dirs.lookup(addresses[i % n], "192.0.2.1")
    out["directory"] = checks / (time.perf_counter() - start)

    settings = config.build({"domains": {"local": ["example.test"]}})
    plain = Pipeline([RelayAccess(settings.domains), RecipientCheck(dirs)])
    client = Client("192.0.2.1", 1)
    start = time.perf_counter()
    for i in range(checks):
        verdict = plain.run("rcpt", client, events[i % n])
        if inspect.isawaitable(verdict):
            await verdict
    out["rcpt check"] = checks / (time.perf_counter() - start)

    # one client per 20 checks, so no source reaches a harvest threshold: the common case
    harvest = config.build({"harvest": {"session_max_unknown": 1000}}).harvest
    detector = HarvestDetector(harvest, MemoryStore())
    full = Pipeline(
        [RelayAccess(settings.domains), HarvestCheck(detector), RecipientCheck(dirs, detector)]
    )
    clients = [Client(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", 1) for i in range(4096)]
    start = time.perf_counter()
    for i in range(checks):
        verdict = full.run("rcpt", clients[(i // 20) % len(clients)], events[i % n])
        if inspect.isawaitable(verdict):
            await verdict
    out["+ harvest"] = checks / (time.perf_counter() - start)
    await dirs.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--checks", type=int, default=200_000)
    args = ap.parse_args()
    logs.setup(config.LogSettings(level="error"))
    results = asyncio.run(run(args.users, args.checks))
    print(f"{args.users:,} users, {args.checks:,} checks each, Python {sys.version.split()[0]}")
    for name, value in results.items():
        print(f"  {name:<11}{value:>12,.0f} checks/s")


if __name__ == "__main__":
    main()
