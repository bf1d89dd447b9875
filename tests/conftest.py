"""Shared pytest configuration: registers the real-peer fixtures
(tests/support/peer_fixtures.py) and the DNS server fixtures (tests/support/dns_fixtures.py),
and the Hypothesis profiles.

Hypothesis profiles, for every property test in the suite: "ci" (default, keeps tests/smtp
under a minute) and "long" (thorough; for a soak run: HYPOTHESIS_PROFILE=long, which also lifts
the per-test timeout in tests/smtp). Neither has a per-example deadline: how long an example
takes on a busy machine is no property of the code (Hypothesis' default of 200 ms applied to
the property tests outside tests/smtp whenever tests/smtp was not collected in the same run).

No test may send a DNS query off this machine: every resolver that is not given name servers
(the default reads /etc/resolv.conf) gets a missing file instead, so such a lookup is a fast
temporary error rather than traffic to the machine's real resolver.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

import mailmoat.assembly  # every check, so that their own settings sections exist
import mailmoat.dns.resolver

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
HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(HYPOTHESIS_PROFILE)

pytest_plugins = ["tests.support.peer_fixtures", "tests.support.dns_fixtures"]


@pytest.fixture(autouse=True)
def _no_system_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailmoat.dns.resolver, "RESOLV_CONF", "/nonexistent/resolv.conf")
