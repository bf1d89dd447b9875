"""A reload in one gateway process: new sessions get a new state, and what only the old state
used (its checks, its delivery) is closed once its sessions are gone, or when the gateway
stops, exactly once, and never what the new state still uses."""

from __future__ import annotations

import asyncio
import smtplib
from pathlib import Path

import pytest

from mailmoat.policy.base import Check
from mailmoat.server import gateway as gateway_module
from mailmoat.server.gateway import Gateway
from tests.support.gateway import gateway_settings
from tests.support.waiting import wait_for


class Recorder(Check):
    """A check that records its start and close."""

    name = "recorder"

    def __init__(self, events: list[tuple[str, int]]) -> None:
        self.events = events

    async def start(self) -> None:
        self.events.append(("start", id(self)))

    async def close(self) -> None:
        self.events.append(("close", id(self)))


async def test_old_state_is_closed_after_its_sessions_or_at_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, int]] = []
    monkeypatch.setattr(gateway_module.assembly, "build", lambda *_: [Recorder(events)])
    settings = gateway_settings(tmp_path / "md")
    gw = Gateway(settings)
    [port] = [p for _, p in await gw.start()]
    first = gw.state
    one = id(first.pipeline.checks[0])
    held = smtplib.SMTP()
    await asyncio.to_thread(held.connect, "127.0.0.1", port)
    await wait_for(lambda: any(s.state is first for s in gw.sessions), "a session")
    await gw.reload(settings)
    second = gw.state
    two = id(second.pipeline.checks[0])
    assert second is not first and two != one and ("start", two) in events
    # the first state's check stays open while its session lives
    await asyncio.sleep(gateway_module.RETIRE_POLL * 1.5)
    assert ("close", one) not in events
    held.close()
    await wait_for(lambda: ("close", one) in events, "the old check closed", timeout=20)
    await gw.reload(settings)
    three = id(gw.state.pipeline.checks[0])
    await gw.stop(1.0)  # the second state is closed at stop, the third by stop itself
    assert sorted(events) == sorted(
        [(what, check) for what in ("start", "close") for check in (one, two, three)]
    ), (events, one, two, three)
