"""The sessions the supervisor runs itself (server/supervisor.py), counted from the decision."""

from __future__ import annotations

from collections.abc import Callable

from mailmoat.policy.base import Check, Client
from mailmoat.server.hold import DELIVERED, LEFT_SILENT

_LOCAL = "supervisor.local"


class LocalSlots(Check):
    """The sessions the supervisor decided to run itself, from the decision to the session's
    end. (Its gateway's `sessions` grows only once a session has started, a loop turn or more
    later: counting those, a burst of connections that arrive at once all stayed here while
    the workers idled.) Every way a client ends, refused or closed, passes `disconnect`."""

    name = "local_slots"

    def __init__(
        self, left_silent: Callable[[int], None], delivered: Callable[[str], None]
    ) -> None:
        self.taken = 0
        self.left_silent = left_silent  # a session here whose client left without a word
        self.delivered = delivered  # a session here that had a message accepted

    def take(self, client: Client) -> None:
        client.tag(_LOCAL)
        self.taken += 1

    def disconnect(self, client: Client) -> None:
        if client.untag(_LOCAL):
            self.taken -= 1
            if client.untag(LEFT_SILENT):
                self.left_silent(1)
            if client.untag(DELIVERED):
                self.delivered(client.address)
