"""Settings of the listener and the SMTP session: server, smtp, timeouts, admin, log."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mailmoat import config_checks, privileges
from mailmoat.config.base import KiB, MiB, Section, check_networks, loopback_host, split_endpoint


class ServerSettings(Section):
    listen: list[str] = Field(
        default=["127.0.0.1:2525"],
        description="Addresses to listen on, HOST:PORT each ([::1]:PORT for IPv6); use port 25 in production. Empty: run only the side services (policy.listen).",
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
    clean_lane: bool = Field(
        default=True,
        description="With worker processes: one more worker that serves only known clients (domains.relay_networks, admission.allow_networks and addresses that delivered a message lately), so their sessions never share an event loop with a flood's.",
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

    proxy_protocol: list[str] = Field(
        default=[],
        description="Networks (CIDR) of trusted proxies, such as HAProxy with send-proxy-v2: a connection from one must start with a PROXY v1 or v2 header, whose client address is then used everywhere; one from elsewhere is plain SMTP, header never read (empty = no proxy).",
    )

    _proxy_networks = field_validator("proxy_protocol")(check_networks)

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: list[str]) -> list[str]:
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


class SmtpSettings(Section):
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


class TimeoutSettings(Section):
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


class AdminSettings(Section):
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
        loopback = loopback_host(host)
        if not loopback and info.data.get("token_file") is None:
            raise ValueError(
                "a non-loopback admin endpoint needs admin.token_file (or use a loopback"
                " address or a unix socket)"
            )
        return v


class LogSettings(Section):
    format: Literal["text", "json"] = Field(
        default="text", description="Log line format: plain text or one JSON object per line."
    )
    level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Lowest level logged."
    )
