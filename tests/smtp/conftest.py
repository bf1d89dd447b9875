"""Hypothesis profiles for tests/smtp: "ci" (default, keeps the whole directory under a minute)
and "long" (thorough; for a soak run). Choose with HYPOTHESIS_PROFILE=long, which also lifts
the project's per-test timeout for the tests in this directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5000,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PROFILE == "ci":
        return
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.timeout(0))
