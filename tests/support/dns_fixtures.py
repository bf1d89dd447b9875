"""pytest fixtures for DNS: the test world in process, and real DNS servers on loopback;
registered by tests/conftest.py.

`fake_dns` is a fresh in-process name server (tests/support/fake_dns.py) serving
tests/support/dns_zone.py: no socket, no dnsmasq.

`dns_server` is one dnsmasq for the whole session serving tests/support/dns_zone.py (tests
must not
stop it); `dnsmasq_factory` starts private ones a test may stop and restart; `silent_dns` is a
server that never answers. Tests that use dnsmasq are marked `peers`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import dns_zone as zone
from tests.support.dnsmasq import Dnsmasq, SilentServer
from tests.support.fake_dns import ZoneNameserver, world

DNS_FIXTURES = frozenset({"dns_server", "dnsmasq_factory"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if DNS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


@pytest.fixture
def fake_dns() -> ZoneNameserver:
    return world()


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dnsmasq]:
    server = Dnsmasq(tmp_path_factory.mktemp("dnsmasq"), zone.records()).start()
    try:
        yield server
    finally:
        server.stop()


DnsmasqFactory = Callable[..., Dnsmasq]


@pytest.fixture
def dnsmasq_factory(tmp_path: Path) -> Iterator[DnsmasqFactory]:
    servers: list[Dnsmasq] = []

    def make(records: list[str] | None = None, ttl: int = 300) -> Dnsmasq:
        server = Dnsmasq(tmp_path / f"dnsmasq{len(servers)}", records or zone.records(), ttl)
        servers.append(server)
        return server.start()

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def silent_dns() -> Iterator[SilentServer]:
    server = SilentServer()
    try:
        yield server
    finally:
        server.close()
