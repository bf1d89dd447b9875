"""pytest fixtures for real peers; registered by tests/conftest.py as a plugin.

Every peer listens on 127.0.0.1 only, on a free port, in its own temp folder, and is stopped
and removed when the test ends, pass or fail. A test that uses a peer fixture is marked
``peers`` automatically (so ``-m "not peers"`` leaves them out); mark tests that only call
``swaks``/``smtp_source`` yourself. Missing programs skip the test with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.postfix import DOWNSTREAM, SENDER, PostfixInstance, new_instance
from tests.support.smtp_sink import SmtpSink

PEER_FIXTURES = frozenset({"postfix_instance", "postfix_downstream", "smtp_sink"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PEER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.peers)


class PostfixFactory:
    """``postfix_instance(role, **options)`` starts a private Postfix and returns it.

    ``postfix_instance("downstream", domain="example.test", users=("alice", "bob"))``
    ``postfix_instance("sender", relay_to=("127.0.0.1", port), relay_protocol="smtp")``
    Other options: ``mynetworks``, ``myhostname``, ``main_cf={"param": "value"}``, ``port``.
    """

    def __init__(self) -> None:
        self.instances: list[PostfixInstance] = []

    def __call__(self, role: str = DOWNSTREAM, **options) -> PostfixInstance:
        instance = new_instance(role, **options)
        self.instances.append(instance)
        return instance.start()

    def downstream(self, **options) -> PostfixInstance:
        return self(DOWNSTREAM, **options)

    def sender(self, relay_to: tuple[str, int], **options) -> PostfixInstance:
        return self(SENDER, relay_to=relay_to, **options)

    def cleanup(self) -> None:
        for instance in reversed(self.instances):
            instance.cleanup()


@pytest.fixture
def postfix_instance() -> Iterator[PostfixFactory]:
    """Factory for private Postfix instances; all are stopped and removed at teardown."""
    factory = PostfixFactory()
    try:
        yield factory
    finally:
        factory.cleanup()


@pytest.fixture
def postfix_downstream(postfix_instance: PostfixFactory) -> PostfixInstance:
    """A started downstream Postfix for example.test with mailboxes alice and bob."""
    return postfix_instance.downstream()


class SinkFactory:
    """``smtp_sink(**options)`` starts an smtp-sink and returns it (options: see SmtpSink)."""

    def __init__(self) -> None:
        self.sinks: list[SmtpSink] = []

    def __call__(self, **options) -> SmtpSink:
        sink = SmtpSink(**options)
        self.sinks.append(sink)
        return sink.start()

    def cleanup(self) -> None:
        for sink in reversed(self.sinks):
            sink.cleanup()


@pytest.fixture
def smtp_sink() -> Iterator[SinkFactory]:
    """Factory for smtp-sink peers; all are stopped and removed at teardown."""
    factory = SinkFactory()
    try:
        yield factory
    finally:
        factory.cleanup()
