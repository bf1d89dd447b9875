"""The one ordered list of defences, built from the settings for every role.

As Haraka's `config/plugins` names its plugins one a line in the order they run, this module
is the only place that says which checks a process runs and in what order:

    admission       allow/deny lists, bans, caps, connection rates         (connect)   front
    bans            strikes and temporary bans                              (rejected)  front
    pregreet        a client that talks before the greeting                 (connect)   front
    tarpit          slower answers for clients that collect errors          (rejected)  front
    relay_access    recipients only in the local domains (invariant 5)      (RCPT)
    harvest         directory-harvest detection      [a directory and harvest.enabled]
    forged_results  forged Authentication-Results removed, DNS checks or not
    score_start     the DNS checks' per-session state                       [dns.checks]
    dnsbl           DNS block and allow lists                               [dns.checks]
    fcrdns          forward-confirmed reverse DNS                           [dns.checks]
    helo            the HELO/EHLO name                                      [dns.checks]
    spf             SPF of MAIL FROM and HELO                               [dns.checks]
    dkim            DKIM signatures                                         [dns.checks]
    dmarc           DMARC policy of the From domain                         [dns.checks]
    auth_results    our Authentication-Results header                       [dns.checks]
    score           the session score's verdict                             [dns.checks]
    recipients      the recipient directory                                 [a directory]

then the delivery's own check (`relay.capabilities`), which the gateway adds last because it
owns the delivery. A check whose action is "off" is left out (SPF and DKIM stay while DMARC
needs them). The DNS checks answer RCPT before the directory is asked: a client they refuse
learns nothing about which recipients exist, and costs the directory nothing.

The roles select from this list; none builds its own:

* one process (`server.workers` = 1): all of it;
* the supervisor: the `front` part at accept (`Defences.checks`), and all of it for the few
  sessions it runs itself, the front's connect hooks skipped (they ran at accept);
* a worker: all of it, the front's connect hooks skipped (the supervisor admitted the client),
  with `Remote` parts in place of admission and bans, whose state lives with the supervisor.

`Defences` is built once per process: it holds live state (connection counts, strikes, stress
mode). `build` makes the whole list from the settings and is what a reload (SIGHUP) calls
with new settings, keeping the `Defences` it is given.

Checks do not import one another: what one leaves for another travels in typed slots
(`policy.results`). `build` refuses an order in which a check reads a slot that a later check
writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mailmoat.config import Settings, split_endpoint
from mailmoat.directory import build_directories
from mailmoat.dns import Resolver
from mailmoat.policy.admission import Admission
from mailmoat.policy.auth import AuthResultsCheck, ForgedResultsCheck
from mailmoat.policy.bans import BanList
from mailmoat.policy.base import Check, Slot
from mailmoat.policy.dkim import DkimCheck
from mailmoat.policy.dmarc import DmarcCheck
from mailmoat.policy.dnsbl import DnsblCheck
from mailmoat.policy.fcrdns import FcrdnsCheck
from mailmoat.policy.harvest import HarvestCheck, HarvestDetector
from mailmoat.policy.helo import HeloCheck
from mailmoat.policy.pregreet import Pregreet
from mailmoat.policy.recipients import RecipientCheck
from mailmoat.policy.relay_access import RelayAccess
from mailmoat.policy.score import Karma, ScoreGate, ScoreStart
from mailmoat.policy.spf import SpfCheck
from mailmoat.policy.stress import Stress
from mailmoat.policy.tarpit import Tarpit
from mailmoat.stats import Stats
from mailmoat.store.base import Store


@dataclass(frozen=True, slots=True)
class Remote:
    """A worker's stand-ins for the defences whose state lives with the supervisor."""

    release: Check
    """In place of admission: gives the connection's admission slots back when it ends."""
    bans: BanList
    """Bans that send their strikes to the supervisor."""


class Defences:
    """The front of the list (the connection-level defences) and the state they share, built
    once per process. `admission` exists only where connections are admitted (not in a
    worker)."""

    admission: Admission

    def __init__(
        self,
        settings: Settings,
        stats: Stats,
        store: Store,
        clock: Callable[[], float] = time.monotonic,
        remote: Remote | None = None,
    ) -> None:
        self.stress = Stress(settings.stress, settings.admission.max_connections, stats, clock)
        self.first: Check
        if remote is None:
            self.bans = BanList(settings.bans, store, stats, clock)
            self.admission = Admission(settings, store, self.bans, self.stress, stats, clock)
            self.first = self.admission
        else:
            self.stress.following = True  # switched by the supervisor, which counts connections
            self.bans = remote.bans
            self.first = remote.release
        self.pregreet = Pregreet(settings, store, stats)
        self.tarpit = Tarpit(settings, self.bans, self.stress, stats)

    def checks(self) -> list[Check]:
        """The front, in order. Admission first: nothing else runs for a refused client.
        Observers of the `rejected` stage (bans, pregreet) come before the tarpit, whose
        closing verdict ends the stage."""
        return [self.first, self.bans, self.pregreet, self.tarpit]


DefencesFactory = Callable[[Settings, Stats, Store, Callable[[], float]], Defences]


def build(
    settings: Settings,
    store: Store,
    defences: Defences,
    resolver: Resolver | None = None,
) -> list[Check]:
    """Every check of a process for `settings`, in order: the front (`defences`, kept as it
    is), then the session's checks, made anew. `resolver`: the DNS checks' (default: one
    from `settings.dns`).

    For a reload: start the new list's checks (`Pipeline.start`) before it serves, and once
    the sessions under the old list have ended, close only the old checks that are not in
    `defences.checks()`: the front is shared by both lists."""
    checks: list[Check] = [*defences.checks(), RelayAccess(settings.domains)]
    directories = build_directories(settings, store)
    detector = None
    if directories is not None and settings.harvest.enabled:
        detector = HarvestDetector(settings.harvest, store, settings.domains.relay_networks)
        checks.append(HarvestCheck(detector))
    checks.append(ForgedResultsCheck(settings.auth, settings.server.hostname))
    if settings.dns.checks:
        checks += _dns_checks(
            settings, store, resolver if resolver is not None else Resolver(settings.dns)
        )
    if directories is not None:
        checks.append(RecipientCheck(directories, detector))
    check_order(checks)
    return checks


def _dns_checks(settings: Settings, store: Store, resolver: Resolver) -> list[Check]:
    """The DNS checks, sharing one resolver and one per-session state (`Karma`). Their lookups
    start as early as the dialogue allows and run while the client talks; the verdicts come at
    RCPT (client and envelope) and at the end of DATA (message)."""
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


def _listen_addresses(settings: Settings) -> list[str]:
    """The specific addresses we listen on (a HELO naming one of them is forged)."""
    out = []
    for endpoint in settings.server.listen:
        host = split_endpoint(endpoint)[0]
        if host not in ("0.0.0.0", "::", "127.0.0.1", "::1"):
            out.append(host)
    return out


def check_order(checks: Sequence[Check]) -> None:
    """Raise ValueError when a check reads a slot that a later check writes (it would never
    see the result), or when two checks write the same slot."""
    writer: dict[Slot[Any], str] = {}
    for check in checks:
        for slot in check.writes:
            if slot in writer:
                raise ValueError(f"{check.name} and {writer[slot]} both write {slot.name}")
            writer[slot] = check.name
    seen: set[Slot[Any]] = set()
    for check in checks:
        late = [s.name for s in check.reads if s in writer and s not in seen]
        if late:
            raise ValueError(f"{check.name} reads {', '.join(late)} before it is written")
        seen.update(check.writes)
