"""Not an open relay (invariant 5): recipients only in the local domains, unless the client is
in a configured relay network.

The domain is compared exactly (ASCII letters case-insensitively, nothing else folded) as it
will be sent downstream: `evilexample.test`, `example.test.evil`, an address literal or a
Unicode look-alike of a local domain is not local. Sender-specified routing in the local part
(`victim%outside@local`, `outside!victim@local`, `"victim@outside"@local`) is refused too: a
server inside that trusts the gateway would rewrite it and relay to the outside. A source
route (`<@a,@b:user@dom>`) is dropped by the engine; its final address is what is checked.
"""

from __future__ import annotations

from ipaddress import ip_network

from mailmoat.config import DomainSettings
from mailmoat.policy.base import Check, Client, Verdict
from mailmoat.smtp._abnf import ascii_lower, routing_local_part
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import reply

RELAY_DENIED = reply(554, "5.7.1", "Relay access denied")
ROUTING_DENIED = reply(
    550, "5.7.1", "Sender-specified routing (%, ! or @ in the local part) is not accepted"
)


class RelayAccess(Check):
    name = "relay_access"

    def __init__(self, settings: DomainSettings) -> None:
        self.local = frozenset(ascii_lower(d) for d in settings.local)
        self.networks = tuple(ip_network(n, strict=False) for n in settings.relay_networks)

    def rcpt(self, client: Client, event: RcptTo) -> Verdict:
        if not event.domain:
            # The bare <Postmaster> (RFC 5321 §4.5.1) is always local. Through Postfix (policy
            # service, milter) any address may come without a domain: `v%outside.test` or
            # `outside.test!v` would be routed out by the MTA's percent hack or bang path.
            local, is_local = event.address, True
        else:
            local, _, domain = event.address.rpartition("@")
            is_local = ascii_lower(domain) in self.local
        if is_local and not routing_local_part(local):
            return None
        if any(client.ip in net for net in self.networks):
            return None
        return ROUTING_DENIED if is_local else RELAY_DENIED
