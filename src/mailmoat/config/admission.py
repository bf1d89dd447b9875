"""Settings of the connection-level defences and shared state: admission, bans, tarpit,
pregreet, stress, store."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat.config.base import KiB, Section, check_networks


class AdmissionSettings(Section):
    allow_networks: list[str] = Field(
        default=[],
        description="Trusted upstream networks (CIDR): exempt from connection limits, rates, bans, pregreet and tarpit.",
    )
    deny_networks: list[str] = Field(
        default=[],
        description="Networks (CIDR) refused at connect with 421; the longest prefix in either list decides.",
    )
    only_accept_from: bool = Field(
        default=False,
        description="Refuse every client outside admission.allow_networks (behind a filtering service).",
    )
    max_connections: int = Field(
        default=10000,
        ge=1,
        description="Client connections open at once; lowered at start to fit the file-descriptor limit.",
    )
    max_per_ip: int = Field(
        default=20, ge=1, description="Connections open at once from one client address."
    )
    max_per_network: int = Field(
        default=100,
        ge=1,
        description="Connections open at once from one /ipv4_prefix or /ipv6_prefix network.",
    )
    ipv4_prefix: int = Field(
        default=24,
        ge=8,
        le=32,
        description="Prefix length that groups IPv4 clients into a network.",
    )
    ipv6_prefix: int = Field(
        default=64,
        ge=16,
        le=128,
        description="Prefix length that groups IPv6 clients into a network.",
    )
    max_rate: int = Field(
        default=60,
        ge=0,
        le=100000,
        description="New connections one address may open per admission.rate_window (0 = no limit).",
    )
    rate_window: float = Field(
        default=60.0, gt=0, description="Seconds of the sliding window for admission.max_rate."
    )

    _networks = field_validator("allow_networks", "deny_networks")(check_networks)

    @model_validator(mode="after")
    def _only(self) -> AdmissionSettings:
        if self.only_accept_from and not self.allow_networks:
            raise ValueError("only_accept_from needs at least one network in allow_networks")
        return self


class BanSettings(Section):
    strikes: int = Field(
        default=5,
        ge=0,
        description="Hard-limit hits from one address within bans.strike_window before it is banned (0 = no bans).",
    )
    strike_window: float = Field(
        default=600.0, gt=0, description="Seconds of the sliding window that counts strikes."
    )
    duration: float = Field(
        default=300.0,
        gt=0,
        description="Seconds of a first ban; each further ban within bans.memory doubles it.",
    )
    max_duration: float = Field(default=86400.0, gt=0, description="Longest ban in seconds.")
    memory: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds past bans of an address are remembered to lengthen the next one.",
    )
    cache: float = Field(
        default=10.0,
        ge=0,
        description="Seconds a node trusts its cached 'not banned' verdict before asking the store again.",
    )


class TarpitSettings(Section):
    error_threshold: int = Field(
        default=10,
        ge=0,
        description="Errors in a session after which every further error reply is delayed (Postfix: 10).",
    )
    error_delay: float = Field(
        default=1.0,
        ge=0,
        description="Seconds each error past tarpit.error_threshold adds to the delay of its reply.",
    )
    suspect_delay: float = Field(
        default=5.0,
        ge=0,
        description="Seconds the greeting is held for an address with strikes but no ban yet (0 = off).",
    )
    max_delay: float = Field(
        default=10.0, ge=0, le=30, description="Longest delay of one reply in seconds."
    )


class PregreetSettings(Section):
    wait: float = Field(
        default=0.0,
        ge=0,
        le=30,
        description="Seconds the greeting is held for a new address; a client that talks first is refused (0 = off).",
    )
    pass_ttl: float = Field(
        default=86400.0,
        gt=0,
        description="Seconds an address that waited is remembered and greeted at once.",
    )
    fail_ttl: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds an address that talked first is refused at connect.",
    )


class StressSettings(Section):
    start_at: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Stress mode starts above this fraction of admission.max_connections (1 = never).",
    )
    stop_at: float = Field(
        default=0.4,
        gt=0,
        le=1,
        description="Stress mode ends below this fraction, after stress.hold seconds under start_at.",
    )
    hold: float = Field(
        default=10.0, ge=0, description="Least seconds stress mode lasts once started."
    )
    greeting: float = Field(default=10.0, gt=0, description="timeouts.greeting in stress mode.")
    command: float = Field(default=10.0, gt=0, description="timeouts.command in stress mode.")
    data: float = Field(default=30.0, gt=0, description="timeouts.data in stress mode.")
    max_errors: int = Field(
        default=1,
        ge=1,
        description="Errors after which a session is closed in stress mode (no tarpit delays).",
    )
    max_per_ip: int = Field(default=5, ge=1, description="admission.max_per_ip in stress mode.")
    spool_memory: int = Field(
        default=64 * KiB, ge=0, description="server.spool_memory in stress mode (never above it)."
    )

    @model_validator(mode="after")
    def _order(self) -> StressSettings:
        if self.stop_at > self.start_at:
            raise ValueError("stop_at must not be above start_at")
        return self


class StoreSettings(Section):
    backend: Literal["memory", "redis"] = Field(
        default="memory",
        description="Where bans, rates and caches live (memory: this node only; redis: shared by every node using store.url).",
    )
    url: str = Field(
        default="redis://127.0.0.1:6379/0",
        description="The Redis server of the redis backend: redis://, rediss:// (TLS) or unix:///path/to/socket.",
    )
    fallback_nodes: int = Field(
        default=1,
        ge=1,
        le=1000,
        description="Least number of nodes assumed while Redis is unreachable: each node counts its own events times the nodes, so a cluster-wide rate still holds.",
    )
    max_keys: int = Field(
        default=200_000,
        ge=100,
        description="Most rate, cache and other ordinary keys the memory store holds; the least recently used go first.",
    )
    max_security_keys: int = Field(
        default=100_000,
        ge=100,
        description="Most ban, strike and harvest keys, held apart so ordinary keys never evict them; when full, strikes and scores go first, then the bans that end soonest.",
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("store.url must start with redis://, rediss:// or unix://")
        return value
