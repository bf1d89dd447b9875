"""What delivery can take, and so what mailmoat may offer its clients (SMTPUTF8, 8BITMIME, SIZE).

mailmoat offers a client only what it can deliver, so that a message never gets a 5xx after its
whole DATA for something that was decidable earlier:

* Maildir takes everything: the configured offer stands.
* The downstream server's EHLO/LHLO extensions are learned by the pool on every new connection
  (the last answer wins: a reconfigured downstream is noticed on the next connection), first
  at start. Once known, EHLO offers SMTPUTF8 and 8BITMIME only if the
  downstream has them, and a SIZE no larger than the downstream's, less HEADER_ROOM.
* While they are unknown (the downstream has not been reached since start), EHLO offers the
  configured set; a MAIL that needs SMTPUTF8 or BODY=8BITMIME waits (bounded by the pool's own
  waits) for the downstream to be reached, and gets 451 if it cannot be.
* A MAIL with an extension the session offered but the downstream turned out to lack (it was
  learned after this client's EHLO) gets 451: the client's next session sees the true offer. A
  declared SIZE over the downstream's limit gets 552 at MAIL (RFC 1870).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.limits import SIZE_HEADER_ROOM as HEADER_ROOM
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.smtp.events import MailFrom
from mailmoat.smtp.limits import Limits
from mailmoat.smtp.replies import reply

if TYPE_CHECKING:
    from collections.abc import Mapping


R_UNREACHABLE = reply(451, "4.4.1", "Downstream server unreachable, try again later")
R_NO_SMTPUTF8 = reply(451, "4.6.7", "SMTPUTF8 is not available now, try again later")
R_NO_8BITMIME = reply(451, "4.6.3", "8BITMIME is not available now, try again later")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The service extensions delivery can honour."""

    smtputf8: bool = True
    eightbitmime: bool = True
    size: int = 0
    """Largest message the downstream takes, in octets; 0: no limit announced."""

    @classmethod
    def of(cls, extensions: Mapping[str, str]) -> Capabilities:
        """From EHLO/LHLO keywords (upper case) and their parameters."""
        size = extensions.get("SIZE", "")
        return cls(
            smtputf8="SMTPUTF8" in extensions,
            eightbitmime="8BITMIME" in extensions,
            size=int(size) if size.isdigit() and len(size) <= 20 else 0,
        )


EVERYTHING = Capabilities()


class Learns(Protocol):
    """The part of a `Delivery` this module needs."""

    @property
    def capabilities(self) -> Capabilities | None:
        """None while unknown."""
        ...

    async def learn(self) -> None:
        """Try (bounded) to find the capabilities out."""
        ...


_offers: dict[tuple[int, Capabilities | None], tuple[SmtpSettings, Limits]] = {}


def offered_limits(smtp: SmtpSettings, caps: Capabilities | None) -> Limits:
    """The engine's limits for a new session: `smtp`, less what delivery cannot honour.
    Made once per (settings, capabilities): a session costs a dict lookup."""
    if caps == EVERYTHING:
        caps = None
    key = (id(smtp), caps)
    made = _offers.get(key)
    if made is not None and made[0] is smtp:
        return made[1]
    limits = engine_limits(smtp)
    if caps is not None:
        update: dict[str, Any] = {}
        if not caps.smtputf8:
            update["smtputf8"] = False
        if not caps.eightbitmime:
            update["eightbitmime"] = False
        if caps.size:
            size = min(smtp.max_message_size, max(caps.size - HEADER_ROOM, 1))
            update["max_message_size"] = size
        limits = replace(limits, **update)
    if len(_offers) >= 64:  # a handful in practice; bounded whatever happens
        _offers.clear()
    _offers[key] = (smtp, limits)
    return limits


class CapabilityCheck(Check):
    """At MAIL: refuse what delivery cannot honour, before any recipient or data."""

    name = "capabilities"

    def __init__(self, delivery: Learns) -> None:
        self.delivery = delivery

    def mail(self, client: Client, event: MailFrom) -> HookResult:
        needs = event.smtputf8 or event.body == "8BITMIME"
        if not needs and event.size is None:
            return None
        caps = self.delivery.capabilities
        if caps is None:
            return self._learn_then(event) if needs else None
        return _judge(caps, event)

    async def _learn_then(self, event: MailFrom) -> Verdict:
        await self.delivery.learn()
        caps = self.delivery.capabilities
        return R_UNREACHABLE if caps is None else _judge(caps, event)


def _judge(caps: Capabilities, event: MailFrom) -> Verdict:
    if event.smtputf8 and not caps.smtputf8:
        return R_NO_SMTPUTF8
    if event.body == "8BITMIME" and not caps.eightbitmime:
        return R_NO_8BITMIME
    if caps.size and event.size is not None and event.size > caps.size - HEADER_ROOM:
        return reply(552, "5.3.4", "Message too big for the downstream server")
    return None
