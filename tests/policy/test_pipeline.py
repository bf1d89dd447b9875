"""The policy pipeline: order, first refusal wins, sync and async hooks mixed, delays add up
(bounded), and disconnect reaches every check that asked for it."""

from __future__ import annotations

import asyncio
import inspect

from mailmoat.policy.base import MAX_DELAY, Check, Client, Decision, Pipeline
from mailmoat.smtp.events import RcptTo, Rejected
from mailmoat.smtp.replies import reply

NO = reply(550, "5.1.1", "no")
LATER = reply(451, "4.3.0", "later")
EV = RcptTo(address="a@example.test", domain="example.test")


class Sync(Check):
    def __init__(self, verdict: object, seen: list[str], name: str) -> None:
        self.verdict, self.seen, self.name = verdict, seen, name

    def rcpt(self, client: Client, event: RcptTo) -> object:
        self.seen.append(self.name)
        return self.verdict


class Async(Sync):
    async def rcpt(self, client: Client, event: RcptTo) -> object:  # type: ignore[override]
        await asyncio.sleep(0)
        self.seen.append(self.name)
        return self.verdict


class Leaves(Check):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    def disconnect(self, client: Client) -> None:
        self.seen.append("bye")


CLIENT = Client("192.0.2.1", 25)


def test_sync_pipeline_stops_at_first_refusal() -> None:
    seen: list[str] = []
    p = Pipeline([Sync(None, seen, "a"), Sync(NO, seen, "b"), Sync(LATER, seen, "c")])
    # the refusal names the check that made it (for logs and counters)
    assert p.run("rcpt", CLIENT, EV) == Decision(reply=NO, reason="b")
    assert seen == ["a", "b"]


def test_stage_without_hooks_is_free() -> None:
    assert Pipeline([Sync(NO, [], "a")]).run("mail", CLIENT, EV) is None


async def test_async_hook_switches_to_awaiting_and_keeps_order() -> None:
    seen: list[str] = []
    p = Pipeline([Sync(None, seen, "a"), Async(None, seen, "b"), Sync(LATER, seen, "c")])
    result = p.run("rcpt", CLIENT, EV)
    assert inspect.isawaitable(result)
    assert await result == Decision(reply=LATER, reason="c")
    assert seen == ["a", "b", "c"]


async def test_delays_add_up_and_ride_on_the_refusal() -> None:
    seen: list[str] = []
    p = Pipeline(
        [
            Sync(Decision(delay=1.5), seen, "tarpit"),
            Async(Decision(delay=2.0), seen, "slow"),
            Sync(Decision(reply=NO, close=True), seen, "ban"),
        ]
    )
    result = await p.run("rcpt", CLIENT, EV)  # type: ignore[misc]
    assert result == Decision(reply=NO, delay=3.5, close=True, reason="ban")


def test_delay_alone_lets_the_command_go_on_and_is_capped() -> None:
    p = Pipeline([Sync(Decision(delay=MAX_DELAY), [], "a"), Sync(Decision(delay=5), [], "b")])
    assert p.run("rcpt", CLIENT, EV) == Decision(delay=MAX_DELAY)


def test_disconnect_reaches_checks_that_implement_it() -> None:
    seen: list[str] = []
    Pipeline([Sync(None, seen, "a"), Leaves(seen)]).disconnect(CLIENT)
    assert seen == ["bye"]


class Watches(Check):
    def __init__(self, verdict: object, seen: list[str]) -> None:
        self.verdict, self.seen = verdict, seen

    def rejected(self, client: Client, event: Rejected) -> object:  # type: ignore[override]
        self.seen.append(f"{event.reason}:{client.errors}")
        return self.verdict


def test_rejected_stage_sees_errors_and_a_closing_verdict_ends_it() -> None:
    seen: list[str] = []
    client = Client("192.0.2.1", 25, errors=3)
    event = Rejected("syntax", NO, "MAIL")
    p = Pipeline(
        [
            Watches(None, seen),
            Watches(Decision(delay=1.0), seen),
            Watches(Decision(close=True), seen),
            Watches(None, seen),
        ]
    )
    assert p.run("rejected", client, event) == Decision(delay=1.0, close=True, reason="check")
    assert seen == ["syntax:3"] * 3


def test_client_tags() -> None:
    client = Client("192.0.2.1", 25)
    assert client.tags == () and not client.has("x") and not client.untag("x")
    client.tag("x")
    assert client.has("x") and client.untag("x") and not client.has("x")
