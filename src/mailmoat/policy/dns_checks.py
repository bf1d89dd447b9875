"""The DNS checks of issue 5 in their order, sharing one resolver and one session state.

    score_start  per-session state; a fresh transaction at MAIL
    dnsbl        DNS block/allow lists (connect -> RCPT); allow-listing skips fcrdns and helo
    fcrdns       forward-confirmed reverse DNS (connect -> RCPT)
    helo         HELO/EHLO name (HELO -> RCPT)
    spf          SPF for MAIL FROM and HELO (MAIL -> RCPT)
    dkim         DKIM signatures (end of DATA)
    dmarc        DMARC policy of the From domain (end of DATA)
    auth_results our Authentication-Results header (end of DATA; forged ones are removed
                 by auth.ForgedResultsCheck, which runs without the DNS checks too)
    score        refuses at RCPT and end of DATA once the session score reaches the threshold

The lookups start as early as the SMTP dialogue allows and run while the client talks; the
verdicts come at RCPT (client and envelope checks) and at the end of DATA (message checks).
"""

from __future__ import annotations

from mailmoat.config import Settings, split_endpoint
from mailmoat.dns import Resolver
from mailmoat.policy.auth import AuthResultsCheck
from mailmoat.policy.base import Check
from mailmoat.policy.dkim import DkimCheck
from mailmoat.policy.dmarc import DmarcCheck
from mailmoat.policy.dnsbl import DnsblCheck
from mailmoat.policy.fcrdns import FcrdnsCheck
from mailmoat.policy.helo import HeloCheck
from mailmoat.policy.score import Karma, ScoreGate, ScoreStart
from mailmoat.policy.spf import SpfCheck
from mailmoat.store.base import Store


def _listen_addresses(settings: Settings) -> list[str]:
    out = []
    for endpoint in settings.server.listen:
        host = split_endpoint(endpoint)[0]
        if host not in ("0.0.0.0", "::", "127.0.0.1", "::1"):
            out.append(host)
    return out


def build_dns_checks(
    settings: Settings, store: Store, resolver: Resolver | None = None
) -> list[Check]:
    """The DNS checks for `settings` (none when dns.checks is off)."""
    if not settings.dns.checks:
        return []
    resolver = resolver if resolver is not None else Resolver(settings.dns)
    karma = Karma(settings.score, settings.domains.relay_networks)
    dmarc_on = settings.dmarc.action != "off" or settings.dmarc.quarantine_action != "off"
    checks: list[Check] = [ScoreStart(karma)]
    if settings.dnsbl.lists and settings.dnsbl.action != "off":
        checks.append(DnsblCheck(settings.dnsbl, resolver, karma, store))
    if settings.fcrdns.action != "off":
        checks.append(FcrdnsCheck(settings.fcrdns, resolver, karma))
    if settings.helo.action != "off":
        ours = [settings.server.hostname, *settings.domains.local]
        checks.append(HeloCheck(settings.helo, resolver, karma, ours, _listen_addresses(settings)))
    if settings.spf.action != "off" or dmarc_on:
        checks.append(SpfCheck(settings.spf, resolver, karma))
    if settings.dkim.action != "off" or dmarc_on:
        checks.append(DkimCheck(settings.dkim, resolver, karma))
    if dmarc_on:
        checks.append(DmarcCheck(settings.dmarc, resolver, karma))
    checks.append(AuthResultsCheck(settings.auth, settings.server.hostname, karma))
    checks.append(ScoreGate(karma))
    return checks
