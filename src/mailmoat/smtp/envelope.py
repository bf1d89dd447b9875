"""The envelope of one transaction, as the engine builds it from the accepted commands."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(slots=True)
class Envelope:
    """The accepted envelope of one transaction."""

    mail_from: str
    """Reverse path without angle brackets; "" is the null sender."""
    rcpt_to: list[str] = field(default_factory=list)
    body: Literal["7BIT", "8BITMIME"] | None = None
    smtputf8: bool = False
    declared_size: int | None = None
