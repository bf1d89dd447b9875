"""Fixtures shared by the policy tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.zone_server import ZoneServer


@pytest.fixture(scope="module")
def zone_server() -> Iterator[ZoneServer]:
    """A name server on 127.0.0.1 (UDP and TCP) for one test module; each test serves its zone."""
    s = ZoneServer()
    try:
        yield s
    finally:
        s.close()
