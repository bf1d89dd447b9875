"""Fixtures for the directory tests: a private slapd with a small directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.relay.conftest import fake_downstream  # noqa: F401  (the relay tests' scripted servers)
from tests.support.slapd import BASE_LDIF, Slapd, person

DIRECTORY = BASE_LDIF + "\n".join(
    [
        "",
        person("alice", "alice@example.test", "sales@example.test", "info@example.test"),
        person("bob", "bob@example.test"),
        person("carol", "Carol.Jones@Example.test"),
        person("star", "st*r@example.test"),
    ]
)

SlapdFactory = Callable[..., Slapd]


@pytest.fixture
def slapd_factory(tmp_path: Path) -> Iterator[SlapdFactory]:
    servers: list[Slapd] = []

    def make(ldif: str = DIRECTORY, tls: bool = False) -> Slapd:
        server = Slapd(tmp_path / f"slapd{len(servers)}", tls=tls)
        servers.append(server)
        server.load(ldif)
        return server.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def slapd(slapd_factory: SlapdFactory) -> Slapd:
    return slapd_factory()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests with a real slapd are peer tests too (`-m "not peers"` leaves them out)."""
    for item in items:
        if {"slapd", "slapd_factory"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)
