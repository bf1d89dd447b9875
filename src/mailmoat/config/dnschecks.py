"""Settings of the DNS-based checks and their scoring: dns, dnsbl, fcrdns, helo, spf, dkim,
dmarc, score, auth."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mailmoat import config_checks
from mailmoat.config.base import Action, Section, check_networks, dns_server


class DnsSettings(Section):
    checks: bool = Field(
        default=True,
        description="Run the DNS checks (FCrDNS, HELO, DNS lists, SPF, DKIM, DMARC); false turns all of them off.",
    )
    nameservers: list[str] = Field(
        default=[],
        description="Name servers as HOST or HOST:PORT ([v6]:PORT); empty means those in /etc/resolv.conf.",
    )
    timeout: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="Seconds one lookup may take in all (every server, every retry); then it is a temporary error.",
    )
    cache_size: int = Field(
        default=20_000,
        ge=0,
        description="Answers kept in the DNS cache, and FCrDNS and HELO results made from them; the least recently used go first (0: no cache).",
    )
    cache_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=0,
        description="Octets of answers the DNS cache keeps (records plus a fixed overhead each); the least recently used go first; one answer over 16 KiB is used but not kept (0: no cache).",
    )
    max_ttl: float = Field(
        default=3600.0, ge=0, description="Longest time an answer is cached, whatever its TTL says."
    )
    negative_ttl: float = Field(
        default=300.0,
        ge=0,
        description="Longest time a 'no such name / no such record' answer is cached (the zone's SOA minimum when lower).",
    )

    @field_validator("nameservers")
    @classmethod
    def _servers(cls, v: list[str]) -> list[str]:
        for server in v:
            dns_server(server)
        return v


class DnsblSettings(Section):
    lists: list[str] = Field(
        default=[],
        description='DNS block/allow lists as postscreen writes them: "zone[=filter]*weight", e.g. "bl.example=127.0.0.[2..11]*3"; a negative weight allows.',
    )
    threshold: int = Field(
        default=1, ge=1, description="Combined weight at which a client counts as listed."
    )
    allowlist_threshold: int = Field(
        default=-1,
        le=0,
        description="Combined weight at or below which a client is allow-listed: it skips the FCrDNS and HELO checks and the session score (0: never).",
    )
    action: Action = Field(
        default="reject",
        description="What a listed client gets at RCPT; with score, its combined weight is added to the session score.",
    )
    cache_ttl: float = Field(
        default=300.0,
        ge=0,
        description="Longest time a client's combined result is kept in the store (the answers' TTL when lower).",
    )

    @field_validator("lists")
    @classmethod
    def _lists(cls, v: list[str]) -> list[str]:
        from mailmoat.dns.lists import parse_list

        for item in v:
            parse_list(item)
        return v


class FcrdnsSettings(Section):
    action: Action = Field(
        default="score",
        description="What a client gets whose address has no PTR name resolving back to it (forward-confirmed reverse DNS).",
    )
    points: int = Field(
        default=2,
        ge=0,
        description="Session points for a client without forward-confirmed reverse DNS.",
    )


class HeloSettings(Section):
    action: Action = Field(
        default="score", description="What a client gets whose HELO/EHLO name fails a check."
    )
    invalid_points: int = Field(
        default=1,
        ge=0,
        description="Points when the HELO name is neither a fully qualified domain name nor a valid address literal.",
    )
    mismatch_points: int = Field(
        default=2,
        ge=0,
        description="Points when a HELO address literal is not the client's address.",
    )
    unresolvable_points: int = Field(
        default=1, ge=0, description="Points when the HELO name has no A or AAAA record."
    )
    forged_points: int = Field(
        default=5,
        ge=0,
        description="Points when the HELO claims to be us: server.hostname, a local domain, or our own address.",
    )


class SpfSettings(Section):
    action: Action = Field(
        default="score", description="What a sender gets whose SPF result (RFC 7208) is fail."
    )
    fail_points: int = Field(default=3, ge=0, description="Points for SPF fail.")
    softfail_points: int = Field(
        default=1, ge=0, description="Points for SPF softfail (never refused by itself)."
    )
    helo: bool = Field(
        default=True,
        description="Also check the HELO identity (RFC 7208 section 2.3) and report it; it decides for the null sender.",
    )
    timeout: float = Field(
        default=20.0,
        gt=0,
        le=120,
        description="Seconds one SPF evaluation may take with all its lookups; then it is a temporary error.",
    )
    cache_size: int = Field(
        default=10_000,
        ge=0,
        description="SPF results kept, each no longer than the shortest TTL of its DNS answers; the least recently used go first (0: none).",
    )


class DkimSettings(Section):
    action: Action = Field(
        default="log",
        description="What a message gets whose DKIM signatures all fail (RFC 6376 6.3: treat it as unsigned, so log).",
    )
    points: int = Field(
        default=1, ge=0, description="Points for a message whose signatures all fail."
    )
    max_signatures: int = Field(
        default=5,
        ge=1,
        le=50,
        description="Signatures verified per message; later ones are ignored.",
    )
    workers: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Threads verifying signatures (each holds one message in memory while it works).",
    )


class DmarcSettings(Section):
    action: Action = Field(
        default="reject",
        description="What a message gets that fails DMARC (RFC 7489) where the author domain publishes p=reject.",
    )
    quarantine_action: Action = Field(
        default="score",
        description="What a message gets that fails DMARC where the domain publishes p=quarantine (there is no quarantine here).",
    )
    reject_points: int = Field(
        default=5,
        ge=0,
        description="Points for a DMARC failure under p=reject, when action is score.",
    )
    quarantine_points: int = Field(
        default=3, ge=0, description="Points for a DMARC failure under p=quarantine."
    )


class ScoreSettings(Section):
    threshold: int = Field(
        default=5,
        ge=1,
        description="Session points (Haraka's karma, but counting against) at which the client's mail is refused.",
    )
    action: Literal["tempfail", "reject"] = Field(
        default="reject", description="Refusal at the threshold: tempfail (4xx) or reject (5xx)."
    )
    exempt_networks: list[str] = Field(
        default=[],
        description="Client networks (CIDR) that skip every DNS check; domains.relay_networks skip them too.",
    )

    @field_validator("exempt_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return check_networks(v)


class AuthSettings(Section):
    authserv_id: str = Field(
        default="",
        description="authserv-id of our Authentication-Results header (RFC 8601); forged ones with it are removed (default: server.hostname).",
    )
    results_header: bool = Field(
        default=True,
        description="Add an Authentication-Results header with the SPF, DKIM, DMARC and iprev results.",
    )

    @field_validator("authserv_id")
    @classmethod
    def _authserv_id(cls, v: str) -> str:
        return v and config_checks.hostname(v)
