"""Only existing recipients (issue 4): each RCPT in a domain that has a directory is looked up
while the client waits. Unknown: `550 5.1.1`, so no message is ever accepted for an address
that does not exist and nothing ever bounces. The directory cannot vouch (down, stale, probe
limit reached): `451 4.4.3`, never an accept. The bare `<Postmaster>` is always accepted."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable

from mailmoat.directory.base import Directories, Status
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.harvest import R_UNKNOWN, HarvestDetector
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply

R_UNAVAILABLE = reply(451, "4.4.3", "Recipient directory unavailable, try again later")


class RecipientCheck(Check):
    name = "recipients"

    def __init__(self, directories: Directories, detector: HarvestDetector | None = None) -> None:
        self.directories = directories
        self.detector = detector

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        if not event.domain:
            return None
        result = self.directories.lookup(event.address, client.address)
        if result is None or result is Status.VALID:
            return None
        if inspect.isawaitable(result):
            return self._later(result, client)
        return self._verdict(result, client)

    async def _later(self, pending: Awaitable[Status], client: Client) -> Verdict:
        verdict = self._verdict(await pending, client)
        return await verdict if inspect.isawaitable(verdict) else verdict

    def _verdict(self, status: Status, client: Client) -> HookResult:
        if status is Status.VALID:
            return None
        if status is Status.UNAVAILABLE:
            return R_UNAVAILABLE
        if self.detector is not None:
            return self.detector.unknown(client)
        return R_UNKNOWN

    async def start(self) -> None:
        await self.directories.start()

    async def close(self) -> None:
        await self.directories.close()
