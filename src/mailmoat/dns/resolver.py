"""The one DNS layer: every lookup mailmoat makes goes through a `Resolver`.

It wraps dnspython's asyncio stub resolver (UDP, TCP when an answer is truncated, CNAME chains
followed by the server) pointed at the configured name servers (each with its own port), and adds:

* a cache that honours TTLs: an answer is kept for the smallest TTL in it (CNAMEs included),
  at most `dns.max_ttl`; "no such name" and "no such record" for the zone's SOA minimum, at
  most `dns.negative_ttl`. A TTL of 0 is not cached. The cache holds at most `dns.cache_size`
  answers and `dns.cache_bytes` octets of them (`weight`), and drops the least recently used
  first; an answer over DNS_MAX_CACHED_ANSWER is used but not kept (invariant 3).
* de-duplication: identical lookups in flight share one query.
* a synchronous look into the cache (`cached`, `cached_addresses`), so that a check whose
  answers are all cached computes its result at once, without a task, a future or a timeout.
* a deadline: one lookup takes at most `dns.timeout` seconds in all; a timeout, SERVFAIL,
  REFUSED or an unreachable server is `TEMPERROR`, never an empty answer. Temporary errors are
  not cached.

Callers get an `Answer` and never an exception for DNS outcomes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from functools import partial
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdatatype
import dns.resolver
import dns.reversename

from mailmoat.config import DnsSettings, dns_server
from mailmoat.dns.cache import TtlCache
from mailmoat.limits import DNS_ENTRY_OVERHEAD as ENTRY_OVERHEAD
from mailmoat.limits import DNS_MAX_CACHED_ANSWER as MAX_CACHED_ANSWER
from mailmoat.limits import DNS_RECORD_OVERHEAD as RECORD_OVERHEAD

RESOLV_CONF = "/etc/resolv.conf"
"""Where the system's name servers are read from when `dns.nameservers` is empty."""

TYPES = frozenset({"A", "AAAA", "PTR", "MX", "TXT", "CNAME", "NS"})


class Status(Enum):
    OK = "ok"
    NXDOMAIN = "nxdomain"
    """The name does not exist."""
    NODATA = "nodata"
    """The name exists but has no record of this type."""
    TEMPERROR = "temperror"
    """No answer could be had: timeout, SERVFAIL, REFUSED, no server reachable."""


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one lookup. `records` by type: A/AAAA the address as text, PTR/CNAME/NS
    the name (lower case, no final dot), MX (preference, name), TXT the bytes of one record
    (its strings joined)."""

    name: str
    rdtype: str
    status: Status
    records: tuple[Any, ...] = ()
    ttl: float = 0.0
    error: str = ""
    expires: float = field(default=0.0, compare=False)
    """When the cache drops this answer (the resolver's clock); 0.0 when it was not cached.
    Results computed from cached answers live no longer than the earliest of them."""

    @property
    def temporary(self) -> bool:
        return self.status is Status.TEMPERROR


@dataclass(slots=True)
class Stats:
    queries: int = 0
    """Queries sent to a server (cache misses that were not joined to one in flight)."""
    hits: int = 0
    joined: int = 0
    """Lookups that waited for an identical one already in flight."""
    temperrors: int = 0


def normalise(name: str) -> str:
    return name.strip().rstrip(".").lower()


def reverse_name(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    """The in-addr.arpa / ip6.arpa name of an address, without the final dot (an IPv4-mapped
    IPv6 address gets the IPv4 name, as dnspython gives it). Made with the standard library:
    it runs for every connection the DNS checks see, and dnspython's objects cost ten times
    as much."""
    address = ip if not isinstance(ip, str) else ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.reverse_pointer


class Resolver:
    def __init__(
        self,
        settings: DnsSettings,
        clock: Callable[[], float] = time.monotonic,
        resolv_conf: str | None = None,
        nameservers: Sequence[dns.nameserver.Nameserver] = (),
        stats: Stats | None = None,
    ) -> None:
        """`nameservers`, when given, are asked instead of `settings.nameservers` (tests: an
        in-process zone, tests/support/fake_dns.py). `stats`: counters to add to (a gateway
        keeps one across the resolvers its reloads make)."""
        self.s = settings
        self.clock = clock
        self.resolv_conf = resolv_conf or RESOLV_CONF
        self._nameservers = list(nameservers)
        self.stats = stats if stats is not None else Stats()
        self._cache: TtlCache[tuple[str, str], Answer] = TtlCache(
            settings.cache_size, clock, weight, settings.cache_bytes, MAX_CACHED_ANSWER
        )
        self._inflight: dict[tuple[str, str], asyncio.Task[Answer]] = {}
        self._resolver: dns.asyncresolver.Resolver | None = None
        self._config_error = ""

    # -- set-up ---------------------------------------------------------------------------------

    def _dnspython(self) -> dns.asyncresolver.Resolver | None:
        if self._resolver is not None or self._config_error:
            return self._resolver
        try:
            if self._nameservers:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = self._nameservers
            elif self.s.nameservers:
                r = dns.asyncresolver.Resolver(configure=False)
                r.nameservers = [
                    dns.nameserver.Do53Nameserver(*dns_server(ns)) for ns in self.s.nameservers
                ]
            else:
                r = dns.asyncresolver.Resolver(filename=self.resolv_conf)
        except (OSError, dns.exception.DNSException) as err:
            self._config_error = f"no name servers: {err}"
            return None
        r.lifetime = self.s.timeout
        r.timeout = max(self.s.timeout / 2, 0.05)  # a silent server is asked twice
        r.cache = None
        r.use_edns(0, 0, 1232)
        self._resolver = r
        return r

    # -- lookups --------------------------------------------------------------------------------

    def cached(self, name: str, rdtype: str) -> Answer | None:
        """The cached answer, or None when there is none (never asks the network)."""
        answer = self._cache.get((normalise(name), rdtype))
        if answer is not None:
            self.stats.hits += 1
        return answer

    async def query(self, name: str, rdtype: str) -> Answer:
        """One lookup; never raises for a DNS outcome."""
        rdtype = rdtype.upper()
        if rdtype not in TYPES:
            raise ValueError(f"unsupported record type {rdtype}")
        answer = self.cached(name, rdtype)
        if answer is not None:
            return answer
        key = (normalise(name), rdtype)
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(*key))
            self._inflight[key] = task
            task.add_done_callback(partial(self._done, key))
        else:
            self.stats.joined += 1
        # one caller giving up (its session closed) must not cancel the others' query
        return await asyncio.shield(task)

    def _done(self, key: tuple[str, str], _task: asyncio.Task[Answer]) -> None:
        self._inflight.pop(key, None)

    async def addresses(self, name: str) -> Answer:
        """A and AAAA together: OK with every address if either has some."""
        a, aaaa = await asyncio.gather(self.query(name, "A"), self.query(name, "AAAA"))
        return _both(name, a, aaaa)

    def cached_addresses(self, name: str) -> Answer | None:
        """`addresses` from the cache alone; None unless both A and AAAA are cached."""
        a = self.cached(name, "A")
        aaaa = self.cached(name, "AAAA") if a is not None else None
        return None if aaaa is None or a is None else _both(name, a, aaaa)

    async def ptr(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> Answer:
        return await self.query(reverse_name(ip), "PTR")

    def clear(self) -> None:
        """Empty the cache (benchmarks: a cold start)."""
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    # -- the query itself -----------------------------------------------------------------------

    async def _lookup(self, name: str, rdtype: str) -> Answer:
        answer = await self._ask(name, rdtype)
        if answer.temporary:
            self.stats.temperrors += 1
        elif answer.ttl > 0 and self.s.cache_size > 0:
            answer = replace(answer, expires=self.clock() + answer.ttl)
            self._cache.put((name, rdtype), answer, answer.expires)
        return answer

    async def _ask(self, name: str, rdtype: str) -> Answer:
        resolver = self._dnspython()
        if resolver is None:
            return Answer(name, rdtype, Status.TEMPERROR, error=self._config_error)
        try:
            qname = dns.name.from_text(name) if name.isascii() else dns.name.from_unicode(name)
        except (dns.exception.DNSException, UnicodeError) as err:
            # not a name that can exist (empty or over-long label, bad IDNA)
            return Answer(name, rdtype, Status.NXDOMAIN, error=f"invalid name: {err}")
        self.stats.queries += 1
        try:
            result = await resolver.resolve(qname, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as err:
            ttl = self._negative_ttl(err.responses().values())
            return Answer(name, rdtype, Status.NXDOMAIN, ttl=ttl)
        except dns.resolver.YXDOMAIN as err:
            return Answer(name, rdtype, Status.NXDOMAIN, error=str(err))
        except dns.exception.Timeout:
            return Answer(name, rdtype, Status.TEMPERROR, error="timeout")
        except dns.exception.DNSException as err:
            # NoNameservers (SERVFAIL, REFUSED, unreachable), malformed answers, ...
            return Answer(name, rdtype, Status.TEMPERROR, error=str(err) or type(err).__name__)
        except OSError as err:
            return Answer(name, rdtype, Status.TEMPERROR, error=str(err))
        rrset = result.rrset
        if rrset is None or len(rrset) == 0:
            ttl = self._negative_ttl([result.response])
            return Answer(name, rdtype, Status.NODATA, ttl=ttl)
        records = tuple(_record(rdtype, rd) for rd in rrset)
        ttl = min(float(result.chaining_result.minimum_ttl), self.s.max_ttl)
        return Answer(name, rdtype, Status.OK, records, ttl)

    def _negative_ttl(self, responses: Any) -> float:
        """RFC 2308: the SOA's own TTL or its MINIMUM, whichever is lower; capped."""
        ttl = self.s.negative_ttl
        for response in responses:
            for rrset in getattr(response, "authority", ()):
                if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                    ttl = min(ttl, rrset.ttl, rrset[0].minimum)
        return float(min(ttl, self.s.max_ttl))


def _both(name: str, a: Answer, aaaa: Answer) -> Answer:
    records = a.records + aaaa.records
    expires = min(a.expires, aaaa.expires)  # the combined answer depends on both
    if records:
        ttl = min(x.ttl for x in (a, aaaa) if x.records)
        return Answer(normalise(name), "A+AAAA", Status.OK, records, ttl, expires=expires)
    for status in (Status.TEMPERROR, Status.NXDOMAIN):
        if status in (a.status, aaaa.status):
            error = a.error or aaaa.error
            return Answer(normalise(name), "A+AAAA", status, (), 0.0, error, expires=expires)
    return Answer(normalise(name), "A+AAAA", Status.NODATA, expires=expires)


def weight(answer: Answer) -> int:
    """What the cache accounts for `answer`: its records' octets plus fixed overheads."""
    size = ENTRY_OVERHEAD + len(answer.name)
    for r in answer.records:
        size += RECORD_OVERHEAD + (len(r) if isinstance(r, bytes | str) else len(r[1]))
    return size


def _record(rdtype: str, rd: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return str(ipaddress.ip_address(rd.address))
    if rdtype == "MX":
        return (int(rd.preference), rd.exchange.to_text(omit_final_dot=True).lower())
    if rdtype == "TXT":
        return b"".join(rd.strings)
    return rd.target.to_text(omit_final_dot=True).lower()
