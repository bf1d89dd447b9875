"""Loud warnings at start for settings that run but will hurt: a hostname that is not a fully
qualified domain name (peers may refuse our HELO and it names us in every Received: line), and
DNS checks switched on with a resolver that does not answer (every message that a check could
refuse would then get 451 4.4.3). They are warnings, not errors: a gateway that starts before
the network is up should still start."""

from __future__ import annotations

import logging

from mailmoat import logs
from mailmoat.config import Settings
from mailmoat.dns.resolver import Resolver


def hostname_problem(hostname: str) -> str:
    """Why `hostname` is not a usable FQDN, or ""."""
    name = hostname.rstrip(".")
    labels = name.split(".")
    if len(labels) < 2 or not all(labels):
        return f"server.hostname {hostname!r} is not a fully qualified domain name"
    if labels[-1].lower() in ("localdomain", "local", "localhost", "internal", "lan"):
        return f"server.hostname {hostname!r} is not a public name"
    return ""


async def resolver_problem(settings: Settings) -> str:
    """Why the configured resolver cannot serve the DNS checks, or "": it must answer for our
    own name (any answer, "no such name" included, shows it works)."""
    resolver = Resolver(settings.dns)
    answer = await resolver.query(settings.server.hostname.rstrip(".") or ".", "A")
    if answer.temporary:
        where = ", ".join(settings.dns.nameservers) or "/etc/resolv.conf"
        return f"the resolver ({where}) did not answer: {answer.error or answer.status.value}"
    return ""


async def warn(settings: Settings) -> None:
    """Log each start-up warning (at WARNING, with what to change), then one line saying the
    checks are done."""
    name = hostname_problem(settings.server.hostname)
    if name:
        logs.event(
            "warning",
            logging.WARNING,
            message=f"{name}: other servers may refuse our EHLO; set server.hostname",
        )
    resolver = await resolver_problem(settings) if settings.dns.checks else ""
    if resolver:
        logs.event(
            "warning",
            logging.WARNING,
            message=f"DNS checks are on but {resolver}; until it answers, mail a check"
            " could refuse gets 451 4.4.3. Fix dns.nameservers or set dns.checks = false",
        )
    logs.event(
        "startup_checks",
        hostname="warned" if name else "ok",
        resolver="off" if not settings.dns.checks else "warned" if resolver else "ok",
    )
