"""Recipient checks from the in-memory directory are fast: at least 50,000 a second
(bench/lookup_speed.py prints the full figures)."""

from __future__ import annotations

from bench.lookup_speed import run

REQUIRED = 50_000


async def test_at_least_50k_recipient_checks_per_second() -> None:
    best: dict[str, float] = {}
    for _ in range(3):  # best of three: a busy machine should not fail the test
        for name, value in (await run(users=2000, checks=30_000)).items():
            best[name] = max(best.get(name, 0.0), value)
        if all(v >= REQUIRED for v in best.values()):
            break
    assert all(v >= REQUIRED for v in best.values()), best
