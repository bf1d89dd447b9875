"""Settings of the services that run beside an existing MTA: the Postfix policy service."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat.config.base import Section, split_endpoint


def side_endpoint(value: str) -> str:
    """ "" (off), a unix socket path, or HOST:PORT with an IP address."""
    if not value or value.startswith("/"):
        return value
    split_endpoint(value)
    return value


class PolicySettings(Section):
    listen: str = Field(
        default="",
        description="Postfix policy service (check_policy_service) endpoint: HOST:PORT or a unix socket path (empty = off).",
    )
    timeout: float = Field(
        default=60.0,
        ge=1.0,
        description="Seconds to answer one policy request (the harvest tarpit and the directory included); past it the answer is DEFER_IF_PERMIT. Keep it under Postfix's smtpd_policy_service_timeout (100 s).",
    )

    _listen = field_validator("listen")(side_endpoint)
