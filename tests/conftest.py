"""Shared pytest configuration: registers the real-peer fixtures (tests/peers/fixtures.py) and
the DNS server fixtures (tests/dns/fixtures.py).

No test may send a DNS query off this machine: every resolver that is not given name servers
(the default reads /etc/resolv.conf) gets a missing file instead, so such a lookup is a fast
temporary error rather than traffic to the machine's real resolver.
"""

from __future__ import annotations

import pytest

import mailmoat.dns.resolver

pytest_plugins = ["tests.peers.fixtures", "tests.dns.fixtures"]


@pytest.fixture(autouse=True)
def _no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailmoat.dns.resolver, "RESOLV_CONF", "/nonexistent/resolv.conf")
