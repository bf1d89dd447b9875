"""Settings of where mail goes and who receives it: domains, relay, maildir, directory, ldap,
callahead, harvest."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from mailmoat import config_checks
from mailmoat.config.base import Section, check_endpoint, check_networks


class DomainSettings(Section):
    local: list[str] = Field(
        default=[],
        description="Domains mailmoat accepts mail for, matched exactly (a U-label and its xn-- A-label are two names); no others are accepted (no open relay).",
    )
    relay_networks: list[str] = Field(
        default=[],
        description="Client networks (CIDR) allowed to send to any domain and to use %, ! and quoted @ routing; empty means none; wider than /16 (IPv4) or /32 (IPv6) only in private space.",
    )

    @field_validator("local")
    @classmethod
    def _domains(cls, v: list[str]) -> list[str]:
        return [config_checks.domain_name(d) for d in v]

    @field_validator("relay_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return [config_checks.relay_network(n) for n in check_networks(v)]


class RelaySettings(Section):
    downstream: str | None = Field(
        default=None,
        description="Internal server as HOST:PORT; unset means deliver to the local Maildir.",
    )
    protocol: Literal["smtp", "lmtp"] = Field(
        default="smtp", description="Protocol spoken to the downstream server."
    )
    starttls: Literal["off", "opportunistic", "require"] = Field(
        default="off", description="STARTTLS towards the downstream server."
    )
    tls_verify: bool = Field(
        default=True, description="Verify the downstream server's certificate when using STARTTLS."
    )
    tls_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle to verify the downstream certificate (default: system store).",
    )
    pool_size: int = Field(
        default=10,
        ge=1,
        le=1000,
        description="Most connections open to the downstream server at once.",
    )
    pool_wait: float = Field(
        default=15.0,
        ge=0,
        description="Seconds to wait for a free downstream connection before answering 451.",
    )
    connect_timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect and read the downstream greeting."
    )
    command_timeout: float = Field(
        default=60.0, gt=0, description="Seconds to wait for a downstream reply to a command."
    )
    data_timeout: float = Field(
        default=120.0,
        gt=0,
        description="Seconds to wait for the downstream reply after the end of data.",
    )
    idle_timeout: float = Field(
        default=30.0, gt=0, description="Seconds an unused pooled downstream connection stays open."
    )
    max_messages_per_connection: int = Field(
        default=100,
        ge=1,
        description="Messages sent over one downstream connection before it is closed.",
    )
    helo_name: str | None = Field(
        default=None,
        description="Name mailmoat gives in EHLO/LHLO downstream (default: server.hostname).",
    )

    @field_validator("downstream")
    @classmethod
    def _downstream(cls, v: str | None) -> str | None:
        return None if v in (None, "") else check_endpoint(v)

    @field_validator("helo_name")
    @classmethod
    def _helo_name(cls, v: str | None) -> str | None:
        return None if v in (None, "") else config_checks.hostname(v)


DirectorySource = Literal["none", "static", "ldap", "callahead"]


class DirectorySettings(Section):
    domains: dict[str, DirectorySource] = Field(
        default={},
        description='Recipient directory per local domain: "static", "ldap", "callahead" or "none" (any address).',
    )
    default: DirectorySource = Field(
        default="none",
        description="Directory for local domains not in directory.domains; with none, each one must be listed there.",
    )
    static_file: Path | None = Field(
        default=None,
        description='File of valid addresses: "user@dom", "alias@dom target...", "@dom" (catch-all), # comments.',
    )
    static_check_interval: float = Field(
        default=2.0, gt=0, description="Seconds between checks of the static file for changes."
    )
    max_entries: int = Field(
        default=1_000_000,
        ge=1,
        description="Most addresses a static file or LDAP snapshot may hold; a larger one is refused.",
    )
    recipient_delimiter: str = Field(
        default="",
        max_length=1,
        description='Sub-address separator such as "+": user+tag@dom is valid when user@dom is.',
    )
    always_valid: list[str] = Field(
        default=["postmaster"],
        description="Local parts valid in every domain that has a directory (RFC 5321 wants postmaster).",
    )

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: dict[str, str]) -> dict[str, str]:
        return {d.strip().lower().rstrip("."): s for d, s in v.items()}

    @field_validator("always_valid")
    @classmethod
    def _locals(cls, v: list[str]) -> list[str]:
        return [x.lower() for x in v]


class LdapSettings(Section):
    url: str | None = Field(
        default=None,
        description="LDAP server as ldap://HOST:PORT or ldaps://HOST:PORT (several: space-separated).",
    )
    bind_dn: str = Field(default="", description="DN to bind as; empty means an anonymous bind.")
    bind_password: str = Field(
        default="", description="Password for bind_dn (prefer bind_password_file)."
    )
    bind_password_file: Path | None = Field(
        default=None, description="File whose first line is the password for bind_dn."
    )
    base: str = Field(default="", description="Search base DN for recipients.")
    filter: str = Field(
        default="(|(mail=%s)(mailLocalAddress=%s))",
        description="Filter for one address: %s address, %u local part, %d domain (all escaped, RFC 4515).",
    )
    snapshot_filter: str = Field(
        default="(|(mail=*)(mailLocalAddress=*))",
        description="Filter that lists every recipient entry, for the snapshot.",
    )
    address_attributes: list[str] = Field(
        default=["mail"], description="Attributes holding an entry's own addresses."
    )
    alias_attributes: list[str] = Field(
        default=["mailLocalAddress"],
        description="Attributes holding further addresses (aliases) of an entry.",
    )
    mode: Literal["snapshot", "lookup"] = Field(
        default="snapshot",
        description="snapshot: keep every address in memory, refreshed; lookup: query per address, cached.",
    )
    refresh: float = Field(
        default=300.0,
        gt=0,
        description="Seconds between snapshot refreshes (new addresses wait this long).",
    )
    retry: float = Field(
        default=30.0,
        gt=0,
        description="Seconds between attempts while the directory cannot be read.",
    )
    max_stale: float = Field(
        default=3600.0,
        ge=0,
        description="Seconds a snapshot (or cached positive answer) still vouches for known addresses in an outage.",
    )
    cache_positive: float = Field(
        default=600.0, ge=0, description="lookup mode: seconds an existing address is cached."
    )
    cache_negative: float = Field(
        default=60.0, ge=0, description="lookup mode: seconds an unknown address is cached."
    )
    connections: int = Field(
        default=2, ge=1, le=64, description="lookup mode: most LDAP queries in flight at once."
    )
    timeout: float = Field(
        default=10.0, gt=0, description="Seconds to connect, bind, or get a search result."
    )
    starttls: bool = Field(default=False, description="Use StartTLS on an ldap:// connection.")
    tls_verify: bool = Field(default=True, description="Verify the LDAP server's certificate.")
    tls_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle for the LDAP server (default: system store)."
    )


class CallAheadSettings(Section):
    server: str | None = Field(
        default=None, description="Server to probe as HOST:PORT (default: relay.downstream)."
    )
    sender: str = Field(
        default="", description='MAIL FROM address of a probe; "" is the null sender <>.'
    )
    positive_ttl: float = Field(
        default=86400.0,
        ge=0,
        description="Seconds an address the server accepted is cached as valid.",
    )
    negative_ttl: float = Field(
        default=1800.0,
        ge=0,
        description="Seconds an address the server refused (5xx) is cached as unknown.",
    )
    probes_per_minute: int = Field(
        default=120,
        ge=1,
        description="Most probes sent to the server per minute, all clients together.",
    )
    source_probes_per_minute: int = Field(
        default=20, ge=1, description="Most probes per minute caused by one client IP address."
    )
    concurrency: int = Field(
        default=4, ge=1, le=100, description="Most probe connections open to the server at once."
    )
    timeout: float = Field(default=15.0, gt=0, description="Seconds one probe may take in all.")

    @field_validator("server")
    @classmethod
    def _server(cls, v: str | None) -> str | None:
        return None if v in (None, "") else check_endpoint(v)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if v and not config_checks.mailbox(v):
            raise ValueError(f"not an address (local@domain, ASCII): {v!r}")
        return v


class HarvestSettings(Section):
    enabled: bool = Field(
        default=True,
        description="Detect directory harvesting (only where a directory is configured).",
    )
    window: float = Field(
        default=3600.0,
        gt=0,
        description="Sliding window in seconds for counting unknown recipients.",
    )
    tarpit_after: int = Field(
        default=5,
        ge=1,
        description="Unknown recipients per client IP in the window before its RCPTs are slowed.",
    )
    tarpit_delay: float = Field(
        default=1.0,
        ge=0,
        description="Seconds added to each RCPT reply per unknown recipient past tarpit_after.",
    )
    tarpit_max: float = Field(
        default=10.0,
        ge=0,
        le=30,
        description="Longest RCPT delay; also the delay of the uniform answer.",
    )
    threshold: int = Field(
        default=25,
        ge=1,
        description="Unknown recipients per client IP in the window before every RCPT gets the same 450.",
    )
    ban_after: int = Field(
        default=50,
        ge=1,
        description="Unknown plus uniformly answered RCPTs per client IP in the window before a ban.",
    )
    network_tarpit_after: int = Field(
        default=20, ge=1, description="As tarpit_after, for all clients in one network together."
    )
    network_threshold: int = Field(
        default=100, ge=1, description="As threshold, for all clients in one network together."
    )
    network_ban_after: int = Field(
        default=200, ge=1, description="As ban_after, for all clients in one network together."
    )
    ipv4_prefix: int = Field(
        default=24, ge=8, le=32, description="Prefix length of an IPv4 network."
    )
    ipv6_prefix: int = Field(
        default=48, ge=16, le=128, description="Prefix length of an IPv6 network."
    )
    ban_time: float = Field(
        default=3600.0,
        gt=0,
        description="Seconds a harvesting IP or network is refused at connect.",
    )
    session_max_unknown: int = Field(
        default=10, ge=1, description="Unknown recipients in one session before it is closed."
    )
    exempt_networks: list[str] = Field(
        default=[],
        description="Client networks (CIDR) never counted or blocked; domains.relay_networks are exempt too.",
    )

    @field_validator("exempt_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        return check_networks(v)

    @model_validator(mode="after")
    def _order(self) -> HarvestSettings:
        if not self.tarpit_after <= self.threshold <= self.ban_after:
            raise ValueError("need tarpit_after <= threshold <= ban_after")
        if not self.network_tarpit_after <= self.network_threshold <= self.network_ban_after:
            raise ValueError("need network_tarpit_after <= network_threshold <= network_ban_after")
        return self


class MaildirSettings(Section):
    path: Path = Field(
        default=Path("Maildir"),
        description="Maildir that receives accepted mail when no downstream is set.",
    )
