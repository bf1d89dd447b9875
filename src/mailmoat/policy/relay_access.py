"""Not an open relay (invariant 5): recipients only in the local domains, unless the client is
in a configured relay network."""

from __future__ import annotations

from ipaddress import ip_network

from mailmoat.config import DomainSettings
from mailmoat.policy.base import Check, Client, Verdict
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply

RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")


class RelayAccess(Check):
    name = "relay_access"

    def __init__(self, settings: DomainSettings) -> None:
        self.local = frozenset(settings.local)
        self.networks = tuple(ip_network(n, strict=False) for n in settings.relay_networks)

    def rcpt(self, client: Client, event: RcptTo) -> Verdict:
        # The bare <Postmaster> (RFC 5321 §4.5.1) is always local; domain is "" for it.
        if not event.domain or event.domain in self.local:
            return None
        if any(client.ip in net for net in self.networks):
            return None
        return RELAY_DENIED
