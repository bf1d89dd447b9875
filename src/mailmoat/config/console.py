"""Settings of the web console (issue 14)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from mailmoat import config_checks
from mailmoat.config.base import Section, loopback_host, split_endpoint


class ConsoleSettings(Section):
    listen: str = Field(
        default="",
        description="Web console HOST:PORT (127.0.0.1:8026 is the usual choice; any non-loopback address needs console.tls_cert and tls_key); empty = off.",
    )
    tls_cert: Path | None = Field(
        default=None, description="PEM certificate the console serves HTTPS with."
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of console.tls_cert.")
    users_file: Path | None = Field(
        default=None,
        description="File of the console's users, one NAME:ARGON2ID-HASH per line (`mailmoat console adduser`); required when console.listen is set.",
    )
    audit_log: Path | None = Field(
        default=None,
        description="File every console login and action is appended to as one JSON line (who, when, from where, what, result); unset = the gateway's log.",
    )
    hostname: str = Field(
        default="",
        description="Name the browser reaches the console by (e.g. console.example.com, with TLS); the Host header must be it or console.listen's address, else 421 (stops DNS rebinding); empty = addresses only (and localhost on loopback).",
    )
    session_time: float = Field(
        default=3600.0, gt=0, description="Seconds a console login stays valid without use."
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, value: str) -> str:
        return config_checks.hostname(value).lower() if value else ""

    @model_validator(mode="after")
    def _needs(self) -> ConsoleSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("console.tls_cert and console.tls_key go together")
        if not self.listen:
            return self
        host, _ = split_endpoint(self.listen)
        loopback = loopback_host(host)
        if not loopback and self.tls_cert is None:
            raise ValueError(
                "a non-loopback console.listen needs console.tls_cert and console.tls_key"
            )
        if self.users_file is None:
            raise ValueError("console.listen needs console.users_file (no default user)")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None
