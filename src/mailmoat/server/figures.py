"""Figures kept by other objects, given to the stats (and so to `/metrics`): the downstream
pool of the current delivery (gauges) and the DNS resolver's cache (counters). A reload
makes a new delivery and a new resolver: the gauges read whichever is current, and the DNS
counters live in one `DnsStats` that every resolver of the gateway adds to, so they only
grow."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from mailmoat.dns.resolver import Stats as DnsStats
from mailmoat.relay.base import Delivery
from mailmoat.relay.pool import DownstreamPool
from mailmoat.stats import Stats

POOL_FIGURES = ("size", "open", "busy", "idle", "waiting")
"""`downstream.pool_<figure>`: connections allowed, open, delivering, idle, and deliveries
waiting for one (all 0 with the Maildir)."""


def _pool_figure(delivery: Callable[[], Delivery], figure: str) -> int:
    pool = getattr(delivery(), "pool", None)
    return int(getattr(pool, figure)) if isinstance(pool, DownstreamPool) else 0


def watch_pool(stats: Stats, delivery: Callable[[], Delivery]) -> None:
    for figure in POOL_FIGURES:
        stats.gauge(f"downstream.pool_{figure}", partial(_pool_figure, delivery, figure))


def watch_dns(stats: Stats, dns: DnsStats) -> None:
    """`dns.cache_hits`: answers found in the cache; `dns.queries`: questions sent to a name
    server (the misses not joined to an identical one in flight)."""
    stats.counted("dns.cache_hits", lambda: dns.hits)
    stats.counted("dns.queries", lambda: dns.queries)
