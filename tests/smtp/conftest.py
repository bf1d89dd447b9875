"""tests/smtp: the Hypothesis profile "long" (HYPOTHESIS_PROFILE=long, tests/conftest.py) also
lifts the project's per-test timeout for the tests in this directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if PROFILE == "ci":
        return
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.timeout(0))
