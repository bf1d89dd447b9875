"""What the pregreet check remembers (surviving mutants of policy/pregreet.py): only a refusal
for talking before the greeting marks an address as failed, only while the test is on, and
never for a trusted client. Any other refusal (a typo, a bad sequence) must not get a real
sender refused at connect for `pregreet.fail_ttl`."""

from __future__ import annotations

import inspect

import pytest

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.policy.pregreet import Pregreet
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore

REFUSAL = reply(554, "5.5.0", "x")


async def _remembered(wait: float, client: Client, reason: str) -> str | None:
    settings = config.build({"pregreet": {"wait": wait}})
    store = MemoryStore.from_settings(settings.store)
    check = Pregreet(settings, store, Stats())
    result = check.rejected(client, Rejected(reason, REFUSAL))
    if inspect.isawaitable(result):
        await result
    return await store.get(f"pregreet:{client.ip}")


async def test_talking_first_is_remembered_as_a_failure() -> None:
    assert await _remembered(1.0, Client("192.0.2.30", 1), "pregreet") == "fail"


@pytest.mark.parametrize(
    "reason", ["unknown_command", "bad_sequence", "syntax", "too_many_errors", "pipelining"]
)
async def test_other_refusals_mark_nothing(reason: str) -> None:
    assert await _remembered(1.0, Client("192.0.2.31", 1), reason) is None


async def test_nothing_is_remembered_while_the_test_is_off() -> None:
    assert await _remembered(0.0, Client("192.0.2.32", 1), "pregreet") is None


async def test_a_trusted_client_is_never_marked() -> None:
    client = Client("192.0.2.33", 1)
    client.trusted = True
    assert await _remembered(1.0, client, "pregreet") is None
