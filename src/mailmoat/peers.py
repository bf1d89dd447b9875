"""Who may talk to a side service (the milter, the Postfix policy service).

Both believe what their peer says of the SMTP client (its address, its recipients), so a
stranger reaching their port could get any address harvest-banned or dropped in the kernel.
A TCP peer outside `<service>.clients` is closed at accept, logged and counted
(`<service>.refused_peer`). A unix socket peer passed the file's mode (0660) already.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterable
from ipaddress import ip_address

from mailmoat import logs
from mailmoat.policy.base import plain_ip
from mailmoat.policy.networks import NetworkSet
from mailmoat.stats import Stats


class PeerGate:
    def __init__(self, service: str, networks: Iterable[str], stats: Stats) -> None:
        self.service = service
        self.networks = NetworkSet(networks)
        self.stats = stats

    def admits(self, writer: asyncio.StreamWriter) -> bool:
        """True for a peer in the list (or on a unix socket); otherwise logs and counts it,
        and the caller closes the connection."""
        sock = writer.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            return True
        peer = writer.get_extra_info("peername")
        try:
            ip = plain_ip(ip_address(str(peer[0]).split("%", 1)[0]))
        except (TypeError, ValueError, IndexError):
            ip = None
        if ip is not None and ip in self.networks:
            return True
        self.stats.incr(f"{self.service}.refused_peer")
        logs.event(
            f"{self.service} peer refused",
            logging.WARNING,
            peer=str(ip),
            reason=f"not in {self.service}.clients",
        )
        return False
