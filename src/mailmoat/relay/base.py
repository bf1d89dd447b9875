"""The delivery interface: the session hands over a complete message, and learns what to answer.

Invariant 1 lives here: `accepted` is True only when the message is safely stored (Maildir,
fsynced) or the downstream server accepted it for every envelope recipient. Anything else gives a
reply of 4xx (try again) or the downstream's own 5xx, never 250.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailmoat.message import Message
from mailmoat.relay.capabilities import Capabilities
from mailmoat.smtp.replies import Reply


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    reply: Reply
    """What the client is told at the end of DATA."""
    accepted: bool
    """True only if the message is stored or accepted downstream for every recipient."""
    detail: str = ""
    """The downstream's own words (or the local error), for the log line."""


class Delivery(Protocol):
    async def start(self) -> None:
        """The gateway is starting (before any connection)."""
        ...

    @property
    def capabilities(self) -> Capabilities | None:
        """What delivery can honour (relay.capabilities); None while unknown."""
        ...

    async def learn(self) -> None:
        """Try (bounded) to find `capabilities` out when they are unknown."""
        ...

    async def deliver(self, message: Message) -> DeliveryResult: ...

    async def close(self) -> None: ...
