"""DNS in process, without a socket: a name server object that answers from an in-memory zone.

`ZoneNameserver` stands in for the name server only. mailmoat's `Resolver` is the real one
(cache, TTLs, de-duplication, deadline, error mapping) and so is dnspython's stub resolver
behind it (CNAME chains, retries, REFUSED and NXDOMAIN handling): they get the same DNS
messages a server on the network would send, encoded and decoded on the wire format. What the
checks see is therefore what they would see with the private dnsmasq of tests/support/dnsmasq.py
serving the same records, and a check's logic can be tested fast and on any machine. The real
network path keeps its own tests (tests/dns/test_resolver.py, and the DNS checks end to end in
tests/policy/ with the `dns_server` fixture).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import dns.asyncbackend
import dns.exception
import dns.message
import dns.nameserver

from mailmoat import config
from mailmoat.dns import Resolver
from tests.support import dns_zone
from tests.support.dns_records import TTL, Zone, from_dnsmasq, respond, served
from tests.support.dnsmasq import LOCAL_ZONES


class ZoneNameserver(dns.nameserver.Nameserver):
    """Answers from `zone` as the private dnsmasq does: authoritative for `domains` (None: for
    every name), REFUSED for other names; every answer with `ttl`.

    `down` makes it unreachable (connection refused), `silent` makes it never answer (each
    try waits out its timeout). `queries` counts the questions it was asked, by name.
    """

    def __init__(
        self, zone: Zone, ttl: int = TTL, domains: Iterable[str] | None = LOCAL_ZONES
    ) -> None:
        super().__init__()
        self.zone = served(zone)
        self.ttl = ttl
        self.domains = None if domains is None else tuple(domains)
        self.down = False
        self.silent = False
        self.queries: Counter[str] = Counter()

    @classmethod
    def from_dnsmasq(cls, records: Iterable[str], **kw: Any) -> ZoneNameserver:
        """A name server for dnsmasq option lines (tests/support/dns_records.from_dnsmasq)."""
        return cls(from_dnsmasq(records), **kw)

    def asked(self, name: str | None = None) -> int:
        """Questions asked so far (about `name` only when given)."""
        if name is None:
            return sum(self.queries.values())
        return self.queries[name.rstrip(".").lower()]

    def __str__(self) -> str:
        return "in-process zone"

    def kind(self) -> str:
        return "InProcess"

    def is_always_max_size(self) -> bool:
        return False

    def answer_nameserver(self) -> str:
        return "in-process"

    def answer_port(self) -> int:
        return 0

    def _answer(self, request: dns.message.Message) -> dns.message.Message | None:
        if self.down:
            raise ConnectionRefusedError("the in-process name server is down")
        for question in request.question:
            self.queries[question.name.to_text().rstrip(".").lower()] += 1
        if self.silent:
            return None
        response = respond(self.zone, request, self.ttl, self.domains)
        if response is None:
            return None
        # through the wire format, as a client on the network would get it
        return dns.message.from_wire(response.to_wire())

    def query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        response = self._answer(request)
        if response is None:
            time.sleep(timeout)
            raise dns.exception.Timeout(timeout=timeout)
        return response

    async def async_query(
        self,
        request: dns.message.QueryMessage,
        timeout: float,
        source: str | None,
        source_port: int,
        max_size: bool,
        backend: dns.asyncbackend.Backend,
        one_rr_per_rrset: bool = False,
        ignore_trailing: bool = False,
    ) -> dns.message.Message:
        response = self._answer(request)
        if response is None:
            await asyncio.sleep(timeout)
            raise dns.exception.Timeout(timeout=timeout)
        return response


def world(ttl: int = TTL) -> ZoneNameserver:
    """The test world of tests/support/dns_zone.py (what the `dns_server` dnsmasq serves)."""
    return ZoneNameserver.from_dnsmasq(dns_zone.records(), ttl=ttl)


def resolver(
    nameserver: ZoneNameserver,
    clock: Callable[[], float] = time.monotonic,
    timeout: float = 1.0,
    **dns_settings: Any,
) -> Resolver:
    """mailmoat's resolver asking `nameserver` (settings: `dns.*` names and values)."""
    settings = config.build({"dns": {"timeout": timeout, **dns_settings}})
    return Resolver(settings.dns, clock, nameservers=[nameserver])
