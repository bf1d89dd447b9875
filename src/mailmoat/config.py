"""The one settings model. Every setting has a safe default and one line of documentation here.

`mailmoat config defaults` prints them all from this file; nothing else documents a default.
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from mailmoat import config_checks, privileges

KiB = 1024
MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, frozen=False, allow_inf_nan=False
    )

    @field_validator("*")
    @classmethod
    def _any_value(cls, v: Any) -> Any:
        # every setting: no control characters in strings, floats finite and at most a year
        problem = config_checks.value_problem(v)
        if problem is not None:
            raise ValueError(problem)
        return v


def split_endpoint(value: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError when it is neither."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host.strip("[]"):
        raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:PORT), got {value!r}")
    return host.strip("[]"), int(port)


def _check_endpoint(value: str) -> str:
    split_endpoint(value)
    return value


class ServerSettings(_Section):
    listen: list[str] = Field(
        default=["127.0.0.1:2525"],
        description="Addresses to listen on, HOST:PORT each ([::1]:PORT for IPv6); use port 25 in production.",
    )
    hostname: str = Field(
        default_factory=lambda: socket.getfqdn(),
        validate_default=True,  # a worker re-reads it as a value: refuse a bad FQDN up front
        description="Name used in the greeting, EHLO reply and Received: header (default: this host's FQDN).",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate chain for STARTTLS; STARTTLS is offered only when set.",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key for STARTTLS.")
    uvloop: bool = Field(
        default=True, description="Use uvloop as the event loop when it is installed."
    )
    drain_time: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Seconds a stop (SIGTERM) waits for sessions and deliveries in flight before closing them with 421.",
    )
    user: str = Field(
        default="",
        description="User to run as once the listeners are bound (started as root); empty keeps the starting user (a warning when that is root).",
    )
    group: str = Field(
        default="",
        description="Group to run as with server.user (default: that user's primary group).",
    )
    workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Worker processes that run the sessions; a supervisor accepts, admits and hands each connection to one, so limits and bans hold across them (0 = one per CPU core; 1 = one process, no supervisor).",
    )
    input_buffer: int = Field(
        default=64 * KiB,
        ge=4 * KiB,
        le=16 * MiB,
        description="Unparsed client input per session before reading pauses.",
    )
    spool_memory: int = Field(
        default=256 * KiB,
        ge=0,
        le=64 * MiB,
        description="Message bytes a session keeps in memory before spooling to a temporary file.",
    )
    spool_memory_total: int = Field(
        default=256 * MiB,
        ge=0,
        description="Message bytes all sessions of the node keep in memory together (split among the worker processes); past it, new data spools to temporary files.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one listen address is needed")
        for x in v:
            host, _ = split_endpoint(x)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ValueError(
                    f"{x!r}: listen on an IP address ([::1]:PORT for IPv6), not a name"
                ) from None
        return v

    _hostname = field_validator("hostname")(config_checks.hostname)

    @model_validator(mode="after")
    def _identity(self) -> ServerSettings:
        try:
            privileges.identity(self.user, self.group)
        except privileges.PrivilegeError as err:
            raise ValueError(str(err)) from None
        return self


class SmtpSettings(_Section):
    max_command_line: int = Field(
        default=512,
        ge=512,
        le=4096,
        description="Longest command line in octets, CRLF included (RFC 5321: 512).",
    )
    max_path: int = Field(
        default=256,
        ge=256,
        le=1024,
        description="Longest reverse or forward path in octets (RFC 5321: 256).",
    )
    max_local_part: int = Field(
        default=64,
        ge=64,
        le=256,
        description="Longest local part of an address in octets (RFC 5321: 64).",
    )
    max_domain: int = Field(
        default=255, ge=255, le=255, description="Longest domain in octets (RFC 5321: 255)."
    )
    max_text_line: int = Field(
        default=1000,
        ge=1000,
        le=16 * KiB,
        description="Longest message line in octets, CRLF included (RFC 5321: 1000).",
    )
    max_recipients: int = Field(
        default=100, ge=1, le=10000, description="Recipients per transaction; more get 452 4.5.3."
    )
    max_message_size: int = Field(
        default=25 * MiB,
        ge=1 * KiB,
        le=2 * 1024 * MiB,
        description="Largest message in octets, advertised with SIZE.",
    )
    max_header_size: int = Field(
        default=256 * KiB,
        ge=1 * KiB,
        le=64 * MiB,
        description="Largest header block in octets (its fields, not the empty line after them); a larger one gets 552 5.3.4 at the end of DATA.",
    )
    max_unknown_commands: int = Field(
        default=10, ge=1, description="Unrecognised commands per session before it is closed."
    )
    max_errors: int = Field(
        default=20, ge=1, description="Error replies per session before it is closed with 421."
    )
    max_junk_commands: int = Field(
        default=100,
        ge=1,
        description="NOOP, RSET, VRFY, EXPN and HELP commands per session before it is closed with 421.",
    )
    bare_line_endings: Literal["reject", "normalise"] = Field(
        default="reject",
        description="Bare CR or LF in message data: reject the message, or rewrite it as CRLF.",
    )
    pipelining: bool = Field(default=True, description="Advertise PIPELINING (RFC 2920).")
    smtputf8: bool = Field(
        default=True, description="Advertise SMTPUTF8 (RFC 6531) and allow UTF-8 addresses with it."
    )
    eightbitmime: bool = Field(
        default=True,
        description="Advertise 8BITMIME (RFC 6152) and accept BODY=8BITMIME (off: refused with 555).",
    )
    vrfy_reply: Literal["252", "502"] = Field(
        default="252",
        description="Answer to VRFY/EXPN: 252 (reveals nothing) or 502 (not implemented).",
    )


class TimeoutSettings(_Section):
    greeting: float = Field(
        default=60.0,
        gt=0,
        description="Seconds from the greeting to the client's first complete command line.",
    )
    command: float = Field(
        default=300.0,
        gt=0,
        description="Seconds from a reply to the next complete command line (RFC 5321: 5 min).",
    )
    data: float = Field(
        default=180.0,
        gt=0,
        description="Seconds a client may stay silent while sending message data.",
    )
    min_data_rate: int = Field(
        default=500,
        ge=0,
        description="Bytes/s a client must average during DATA once timeouts.data has passed (0 = off).",
    )
    session: float = Field(
        default=1800.0,
        gt=0,
        description="Most seconds one session may last, whatever the client does.",
    )


def _check_networks(v: list[str]) -> list[str]:
    for n in v:
        try:
            ipaddress.ip_network(n, strict=False)
        except ValueError as err:
            raise ValueError(f"not a network: {n!r} ({err})") from None
    return v


class AdmissionSettings(_Section):
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

    _networks = field_validator("allow_networks", "deny_networks")(_check_networks)

    @model_validator(mode="after")
    def _only(self) -> AdmissionSettings:
        if self.only_accept_from and not self.allow_networks:
            raise ValueError("only_accept_from needs at least one network in allow_networks")
        return self


class BanSettings(_Section):
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


class TarpitSettings(_Section):
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


class PregreetSettings(_Section):
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


class StressSettings(_Section):
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


class StoreSettings(_Section):
    backend: Literal["memory"] = Field(
        default="memory", description="Where bans, rates and caches live (memory: this node only)."
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


class AdminSettings(_Section):
    token_file: Path | None = Field(
        default=None,
        description="File whose first line is the bearer token (16+ characters) every admin request must carry; required for a non-loopback admin.listen.",
    )
    listen: str = Field(
        default="",
        description="Admin HTTP endpoint (/stats for `mailmoat stats`, /metrics, /healthz): 127.0.0.1:PORT, [::1]:PORT, a unix socket path, or any HOST:PORT with admin.token_file (empty = off).",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str, info: ValidationInfo) -> str:
        if not v or v.startswith("/"):
            return v
        host, _ = split_endpoint(v)
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback and info.data.get("token_file") is None:
            raise ValueError(
                "a non-loopback admin endpoint needs admin.token_file (or use a loopback"
                " address or a unix socket)"
            )
        return v


class DomainSettings(_Section):
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
        return [config_checks.relay_network(n) for n in _check_networks(v)]


class RelaySettings(_Section):
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
        return None if v in (None, "") else _check_endpoint(v)

    @field_validator("helo_name")
    @classmethod
    def _helo_name(cls, v: str | None) -> str | None:
        return None if v in (None, "") else config_checks.hostname(v)


DirectorySource = Literal["none", "static", "ldap", "callahead"]


class DirectorySettings(_Section):
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


class LdapSettings(_Section):
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


class CallAheadSettings(_Section):
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
        return None if v in (None, "") else _check_endpoint(v)

    @field_validator("sender")
    @classmethod
    def _sender(cls, v: str) -> str:
        if v and not config_checks.mailbox(v):
            raise ValueError(f"not an address (local@domain, ASCII): {v!r}")
        return v


class HarvestSettings(_Section):
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
        return _check_networks(v)

    @model_validator(mode="after")
    def _order(self) -> HarvestSettings:
        if not self.tarpit_after <= self.threshold <= self.ban_after:
            raise ValueError("need tarpit_after <= threshold <= ban_after")
        if not self.network_tarpit_after <= self.network_threshold <= self.network_ban_after:
            raise ValueError("need network_tarpit_after <= network_threshold <= network_ban_after")
        return self


Action = Literal["off", "log", "score", "tempfail", "reject"]
"""What a failed check does: nothing, a log line, points on the session score, 4xx, or 5xx."""


class DnsSettings(_Section):
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


def dns_server(value: str) -> tuple[str, int]:
    """'HOST', 'HOST:PORT' or '[v6]:PORT' -> (address, port); ValueError otherwise."""
    try:
        ipaddress.ip_address(value)
        return value, 53
    except ValueError:
        pass
    host, port = split_endpoint(value)
    ipaddress.ip_address(host)
    return host, port


class DnsblSettings(_Section):
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


class FcrdnsSettings(_Section):
    action: Action = Field(
        default="score",
        description="What a client gets whose address has no PTR name resolving back to it (forward-confirmed reverse DNS).",
    )
    points: int = Field(
        default=2,
        ge=0,
        description="Session points for a client without forward-confirmed reverse DNS.",
    )


class HeloSettings(_Section):
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


class SpfSettings(_Section):
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


class DkimSettings(_Section):
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


class DmarcSettings(_Section):
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


class ScoreSettings(_Section):
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
        return _check_networks(v)


class AuthSettings(_Section):
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


class MaildirSettings(_Section):
    path: Path = Field(
        default=Path("Maildir"),
        description="Maildir that receives accepted mail when no downstream is set.",
    )


class LogSettings(_Section):
    format: Literal["text", "json"] = Field(
        default="text", description="Log line format: plain text or one JSON object per line."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    domains: DomainSettings = Field(default_factory=DomainSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    maildir: MaildirSettings = Field(default_factory=MaildirSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    bans: BanSettings = Field(default_factory=BanSettings)
    tarpit: TarpitSettings = Field(default_factory=TarpitSettings)
    pregreet: PregreetSettings = Field(default_factory=PregreetSettings)
    stress: StressSettings = Field(default_factory=StressSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    ldap: LdapSettings = Field(default_factory=LdapSettings)
    callahead: CallAheadSettings = Field(default_factory=CallAheadSettings)
    harvest: HarvestSettings = Field(default_factory=HarvestSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    dnsbl: DnsblSettings = Field(default_factory=DnsblSettings)
    fcrdns: FcrdnsSettings = Field(default_factory=FcrdnsSettings)
    helo: HeloSettings = Field(default_factory=HeloSettings)
    spf: SpfSettings = Field(default_factory=SpfSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    def directory_for(self, domain: str) -> DirectorySource:
        """The directory that vouches for recipients in `domain` (a local domain)."""
        return self.directory.domains.get(domain, self.directory.default)

    @model_validator(mode="after")
    def _directories(self) -> Settings:
        d = self.directory
        local = set(self.domains.local)
        for domain in d.domains:
            if domain not in local:
                raise ValueError(f"directory.domains: {domain!r} is not in domains.local")
        if d.default == "none" and any(s != "none" for s in d.domains.values()):
            missing = sorted(local - set(d.domains))
            if missing:
                raise ValueError(
                    f"directory.domains: local domain(s) {', '.join(missing)} have no directory;"
                    ' list them ("none" accepts any address there) or set directory.default'
                )
        used = {self.directory_for(x) for x in local} if local else set()
        if "static" in used and d.static_file is None:
            raise ValueError("directory.static_file is needed for a static directory")
        if "ldap" in used and (not self.ldap.url or not self.ldap.base):
            raise ValueError("ldap.url and ldap.base are needed for an LDAP directory")
        if "ldap" in used and not _ldap3_installed():
            raise ValueError(
                "an LDAP directory needs the ldap3 package: pip install 'mailmoat[ldap]'"
            )
        if "callahead" in used and not (self.callahead.server or self.relay.downstream):
            raise ValueError("callahead.server or relay.downstream is needed for call-ahead")
        return self


def _ldap3_installed() -> bool:
    """ldap3 is an extra (`mailmoat[ldap]`): only LDAP directories need it."""
    try:
        import ldap3  # noqa: F401
    except ImportError:
        return False
    return True


class ConfigError(Exception):
    """Invalid configuration; `problems` lists (dotted key, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" for k, r in problems))


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]) or "(top)", e["msg"]) for e in err.errors()]


def build(data: dict[str, Any]) -> Settings:
    try:
        # an explicit [server] table, so a bad default host name is reported under its key
        return Settings.model_validate({"server": {}, **data})
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read a TOML file (optional) and apply dotted-key overrides such as {"relay.pool_size": 5}."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(config_checks.read_config_file(path).decode("utf-8"))
        except OSError as err:
            raise ConfigError([(str(path), err.strerror or str(err))]) from None
        except UnicodeDecodeError:
            raise ConfigError([(str(path), "not UTF-8 text")]) from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError([(str(path), f"not valid TOML: {err}")]) from None
        except RecursionError:
            raise ConfigError([(str(path), "not valid TOML: nested too deeply")]) from None
        except ValueError as err:
            raise ConfigError([(str(path), str(err))]) from None
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "cannot override inside a non-table value")])
        node[leaf] = value
    return build(data)


def describe_defaults() -> list[tuple[str, str, str]]:
    """(dotted key, default as TOML-ish text, one-line description) for every setting."""
    rows = []
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, f in model.model_fields.items():
            if f.default_factory is not None:
                default: Any = "(computed)" if name == "hostname" else f.default_factory()  # type: ignore[call-arg]
            else:
                default = f.default
            rows.append((f"{section_name}.{name}", _show(default), f.description or ""))
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, str):
        return value if value == "(computed)" else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show(k)} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)
