"""Tarpit: slow answers for clients that misbehave, so a bot spends its time, not ours.

- After `tarpit.error_threshold` errors in a session, every further error reply is delayed,
  by `tarpit.error_delay` more seconds for each error (at most `tarpit.max_delay`); the engine
  closes the session at `smtp.max_errors`.
- An address with a recent strike (see `bans`) waits `tarpit.suspect_delay` for its greeting.
- In stress mode nothing is delayed, since held connections are what is short: a session is
  closed instead once it reaches `stress.max_errors` errors.

A delay holds the reply and everything after it; the session keeps no task for it, only a
timer, and it reads no more input than `server.input_buffer` meanwhile.
"""

from __future__ import annotations

from mailmoat.config import Settings
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Check, Client, Decision, HookResult
from mailmoat.policy.stress import Stress
from mailmoat.smtp.events import Rejected
from mailmoat.smtp.replies import reply
from mailmoat.stats import Stats


class Tarpit(Check):
    name = "tarpit"

    def __init__(self, settings: Settings, bans: BanList, stress: Stress, stats: Stats) -> None:
        self.settings = settings.tarpit
        self.bans = bans
        self.stress = stress
        self.stats = stats
        self.closing = reply(
            421, "4.7.0", f"{settings.server.hostname} Error: too many errors, closing connection"
        )

    def connect(self, client: Client) -> HookResult:
        delay = self.settings.suspect_delay
        if not delay or client.trusted or self.stress.active:
            return None
        if self.bans.suspect(str(client.ip)):
            self.stats.incr("tarpit.suspect")
            return Decision(delay=delay)
        return None

    def rejected(self, client: Client, event: Rejected) -> HookResult:
        if client.trusted:
            return None
        errors = client.errors
        if self.stress.active:
            if errors >= self.stress.settings.max_errors:
                self.stats.incr("tarpit.stress_closed")
                self.bans.strike(str(client.ip), "stress_errors")
                return Decision(reply=self.closing, close=True)
            return None
        t = self.settings
        over = errors - t.error_threshold
        if over > 0 and t.error_delay > 0:
            return Decision(delay=min(t.error_delay * over, t.max_delay))
        return None
