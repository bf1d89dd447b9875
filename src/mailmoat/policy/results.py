"""What the DNS checks find, as types every check may read, and the slots that carry them.

A check leaves its result in a `Slot` of the session's state (`score.SessionState`); a later
check, the score or the Authentication-Results header reads it from there. A slot that other
checks read is declared here with its result type, so that a check depends on this module and
never on another check (Haraka's cut: a plugin records its results, it does not import the
plugins that use them). A slot only its own check reads is declared in that check's module.

    IPREV        fcrdns writes at connect; auth_results reads
    ALLOWLISTED  dnsbl writes at RCPT; fcrdns, helo and the score read
    SPF          spf writes at MAIL; dmarc and auth_results read (per transaction)
    DKIM         dkim writes at end of DATA; dmarc and auth_results read (per transaction)
    DMARC        dmarc writes at end of DATA; auth_results reads (per transaction)
"""

from __future__ import annotations

from dataclasses import dataclass

from mailmoat.policy.base import Slot


@dataclass(frozen=True, slots=True)
class Iprev:
    """Forward-confirmed reverse DNS (RFC 8601 3: iprev)."""

    result: str
    """pass, fail or temperror."""
    name: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class SpfResult:
    identity: str
    """mailfrom or helo"""
    domain: str
    result: str
    """pass, fail, softfail, neutral, none, temperror, permerror"""
    explanation: str = ""


@dataclass(frozen=True, slots=True)
class SpfResults:
    mailfrom: SpfResult
    """The MAIL FROM identity (for the null sender: the HELO identity's result)."""
    helo: SpfResult | None


@dataclass(frozen=True, slots=True)
class DkimResult:
    """One DKIM signature's result (RFC 8601 2.7.1)."""

    result: str
    domain: str = ""
    selector: str = ""
    b: str = ""
    """The start of the signature (b=), to tell signatures apart (RFC 6008)."""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DmarcResult:
    result: str
    """pass, fail, none, temperror, permerror (more author domains than are evaluated)"""
    domain: str = ""
    """The author domain (header.from)."""
    policy: str = "none"
    """The policy that applies (p or sp) as published; "unknown" when it could not be read."""
    disposition: str = "none"
    """What the policy asks for this message after pct sampling."""
    reason: str = ""


IPREV: Slot[Iprev] = Slot("fcrdns")
ALLOWLISTED: Slot[bool] = Slot("allowlisted")
"""True once the DNS allow lists vouch for the client: no FCrDNS or HELO check, no score
refusal."""
SPF: Slot[SpfResults] = Slot("spf", per_transaction=True)
DKIM: Slot[list[DkimResult]] = Slot("dkim", per_transaction=True)
DMARC: Slot[DmarcResult] = Slot("dmarc", per_transaction=True)
