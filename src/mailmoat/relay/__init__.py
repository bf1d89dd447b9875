"""Delivery of accepted mail: to the downstream SMTP/LMTP server, or into a local Maildir."""

from __future__ import annotations

from mailmoat.config import Settings
from mailmoat.relay.base import Delivery, DeliveryResult
from mailmoat.relay.downstream import DownstreamDelivery
from mailmoat.relay.maildir import MaildirDelivery

__all__ = [
    "Delivery",
    "DeliveryResult",
    "DownstreamDelivery",
    "MaildirDelivery",
    "make_delivery",
]


def make_delivery(settings: Settings) -> Delivery:
    """Maildir when `relay.downstream` is unset, otherwise the pooled downstream client."""
    if settings.relay.downstream is None:
        return MaildirDelivery(settings)
    return DownstreamDelivery(settings)
