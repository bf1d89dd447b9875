"""Pregreet test (Postfix postscreen's, Haraka's early_talker): hold the greeting of an address
not seen before for `pregreet.wait` seconds. A real SMTP client waits for the greeting; many
bots start talking at once. The engine notices bytes sent before the greeting and refuses the
session (`554 5.5.0`); this check remembers the verdict in the store: an address that waited
is greeted at once for `pregreet.pass_ttl` seconds, one that talked first is refused at connect
with `421 4.7.0` for `pregreet.fail_ttl` seconds.
"""

from __future__ import annotations

from mailmoat.config import Settings
from mailmoat.policy.base import Check, Client, Decision, HookResult, Verdict
from mailmoat.smtp.events import Helo, Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats
from mailmoat.store import Store

_HELD = "pregreet.held"


class Pregreet(Check):
    name = "pregreet"

    def __init__(self, settings: Settings, store: Store, stats: Stats) -> None:
        self.settings = settings.pregreet
        self.store = store
        self.stats = stats
        self.refusal = reply(
            421,
            "4.7.0",
            f"{settings.server.hostname} Error: you talked before the greeting, try again later",
        )

    def connect(self, client: Client) -> HookResult:
        if not self.settings.wait or client.trusted:
            return None
        return self._check(client)

    async def _check(self, client: Client) -> Verdict:
        seen = await self.store.get(f"pregreet:{client.ip}")
        if seen == "pass":
            return None
        if seen == "fail":
            self.stats.incr("refused.pregreet")
            return self.refusal
        client.tag(_HELD)
        return Decision(delay=self.settings.wait)

    def helo(self, client: Client, event: Helo) -> HookResult:
        if client.untag(_HELD):
            self.stats.incr("pregreet.passed")
            return self._remember(client, "pass", self.settings.pass_ttl)
        return None

    def rejected(self, client: Client, event: Rejected) -> HookResult:
        if event.reason == "pregreet" and self.settings.wait and not client.trusted:
            client.untag(_HELD)
            self.stats.incr("pregreet.failed")
            return self._remember(client, "fail", self.settings.fail_ttl)
        return None

    async def _remember(self, client: Client, verdict: str, ttl: float) -> None:
        await self.store.set(f"pregreet:{client.ip}", verdict, ttl)
