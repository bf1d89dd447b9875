"""The clean lane (`server.clean_lane`): one worker process of the supervisor's that serves only
known clients, so their sessions never share an event loop with a flood's.

Under a flood every ordinary worker runs thousands of attack sessions (slowloris, greet-and-
leave, deadline closes in bulk): a turn of its event loop takes milliseconds, and a regular
sender's EHLO, MAIL, RCPT and DATA each wait for one. Postfix's postscreen passes a
whitelisted client straight to an smtpd; here the supervisor hands a known client to the lane
worker, whose loop holds only such sessions and so answers at once.

Known: in `domains.relay_networks` or `admission.allow_networks` (the administrator's own),
or an address that had a message accepted lately (`hold.GreetedHold.vouch`). A known client
goes to the lane whenever it is up and has room, under a light load too (the supervisor then
runs only strangers' sessions itself, and the lane's caches and downstream connections stay
warm for the next flood). Nothing else changes for it: admission ran before (bans, caps,
rates), and its session runs every check as in any worker. At most `LANE_SESSIONS` run in
the lane at once (many addresses that each delivered once cannot fill it); past that, or
while the lane worker is down (it is restarted like any worker), known clients go to the
other workers as before.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from mailmoat.config import Settings
from mailmoat.limits import LANE_SESSIONS
from mailmoat.policy.base import Client, address_ip
from mailmoat.policy.networks import NetworkSet
from mailmoat.server.hold import GreetedHold


class _Worker(Protocol):
    sessions: int


W = TypeVar("W", bound=_Worker)


class CleanLane:
    """Which clients the lane serves; `index` is the lane worker's place among the
    supervisor's workers (-1: no lane)."""

    def __init__(self, settings: Settings, workers: int, hold: GreetedHold) -> None:
        self.index = workers if settings.server.clean_lane else -1
        self.hold = hold
        self.relay = NetworkSet(settings.domains.relay_networks)

    def reload(self, settings: Settings) -> None:
        self.relay = NetworkSet(settings.domains.relay_networks)

    def known(self, client: Client) -> bool:
        """A client the lane serves: the administrator's networks, or a sender vouched for."""
        return client.trusted or client.ip in self.relay or self.hold.vouched(client.address)

    def known_address(self, address: str) -> bool:
        """`known` before admission, from the address alone: vouched for, or in
        domains.relay_networks (the supervisor's listeners admit such a client first)."""
        if self.hold.vouched(address):
            return True
        if not self.relay:
            return False
        try:
            return address_ip(address) in self.relay
        except ValueError:
            return False

    def pick(self, lane: list[W]) -> W | None:
        """The lane's worker (`lane`: it, when it is up) if it has room for one more."""
        return lane[0] if lane and lane[0].sessions < LANE_SESSIONS else None
