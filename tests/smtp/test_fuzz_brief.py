"""A short run of bench/fuzz_engine.py's builtin fuzzer, so CI exercises the fuzz target.

The long run: python bench/fuzz_engine.py --seconds 600 (see its docstring).
"""

from __future__ import annotations

import os

import pytest
from bench import fuzz_engine

SECONDS = float(os.environ.get("MAILMOAT_FUZZ_SECONDS", "5"))


def test_seed_corpus_runs_clean():
    for seed in fuzz_engine.SEEDS:
        fuzz_engine.run_one(seed)


def test_fuzz_brief():
    result = fuzz_engine.fuzz(seconds=SECONDS, seed=int(os.environ.get("MAILMOAT_FUZZ_SEED", "0")))
    if result.failure is not None:
        small = fuzz_engine.minimise(result.reproducer, budget=10)
        pytest.fail(f"{result.failure!r}\nreproducer: fuzz_engine.run_one({small!r})")
    assert result.executions > len(fuzz_engine.SEEDS)


def test_fuzzer_reports_a_broken_invariant(monkeypatch):
    """The fuzzer notices a failure and shrinks it to a small reproducer."""
    real = fuzz_engine.Harness._check_event

    def broken(self, ev):
        real(self, ev)
        if type(ev).__name__ == "DataStart":
            raise fuzz_engine.InvariantError("planted")

    monkeypatch.setattr(fuzz_engine.Harness, "_check_event", broken)
    result = fuzz_engine.fuzz(seconds=5, seed=1)
    assert isinstance(result.failure, fuzz_engine.InvariantError)
    small = fuzz_engine.minimise(result.reproducer, budget=3)
    assert len(small) <= len(result.reproducer)
    with pytest.raises(fuzz_engine.InvariantError):
        fuzz_engine.run_one(small)


def test_plan_is_deterministic():
    data = fuzz_engine.SEEDS[2]
    assert fuzz_engine.plan(data) == fuzz_engine.plan(data)
    _, chunks, _ = fuzz_engine.plan(data)
    assert b"".join(chunks) == data[2:]
