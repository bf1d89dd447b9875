"""The recipient check's answers, pinned where mutation testing (scripts/mutation over
policy/recipients.py) found nothing holding them: a directory that cannot vouch gives exactly
`451 4.4.3`, answered at once or later, and never an accept or a permanent refusal."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mailmoat.directory.base import Directories, Directory, LookupResult, Status
from mailmoat.policy.base import Client
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import Reply


class FixedDirectory(Directory):
    """Answers every lookup with one status, at once or after an await."""

    def __init__(self, status: Status, deferred: bool) -> None:
        self.status = status
        self.deferred = deferred

    def lookup(self, local: str, domain: str, source: str) -> LookupResult:
        return self._later() if self.deferred else self.status

    async def _later(self) -> Status:
        await asyncio.sleep(0)
        return self.status


async def verdict_for(status: Status, deferred: bool) -> Any:
    check = RecipientCheck(Directories({"example.test": FixedDirectory(status, deferred)}))
    result = check.rcpt(Client("192.0.2.9", 25), RcptTo("alice@example.test", "example.test"))
    return await result if asyncio.iscoroutine(result) else result


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "awaited"])
async def test_a_directory_that_cannot_vouch_gives_451_4_4_3(deferred: bool) -> None:
    verdict = await verdict_for(Status.UNAVAILABLE, deferred)
    assert isinstance(verdict, Reply)
    assert (verdict.code, verdict.enhanced) == (451, "4.4.3")


@pytest.mark.parametrize("deferred", [False, True], ids=["at-once", "awaited"])
async def test_an_unknown_recipient_gets_550_5_1_1_and_a_valid_one_passes(deferred: bool) -> None:
    unknown = await verdict_for(Status.UNKNOWN, deferred)
    assert isinstance(unknown, Reply)
    assert (unknown.code, unknown.enhanced) == (550, "5.1.1")
    assert await verdict_for(Status.VALID, deferred) is None
