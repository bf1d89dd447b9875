"""Settings of the services that run beside an existing MTA: the Postfix policy service."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from mailmoat.config.base import Section, check_networks, loopback_host, split_endpoint

LOOPBACK_ONLY = ["127.0.0.0/8", "::1/128"]
"""The default peers of a side service: the MTA on this host."""


def side_endpoint(value: str) -> str:
    """ "" (off), a unix socket path, or HOST:PORT with an IP address."""
    if not value or value.startswith("/"):
        return value
    split_endpoint(value)
    return value


def _loopback(network: str) -> bool:
    net = ipaddress.ip_network(network, strict=False)
    return net.network_address.is_loopback and net.broadcast_address.is_loopback


def side_listen(section: str) -> Callable[[str, ValidationInfo], str]:
    """The `listen` validator of a side service: `side_endpoint`, and an address other hosts
    reach needs `<section>.clients` naming them, since the service believes the client
    address and recipients its peer names (an unknown peer could get anyone banned)."""

    def check(value: str, info: ValidationInfo) -> str:
        side_endpoint(value)
        if not value or value.startswith("/"):
            return value
        host, _ = split_endpoint(value)
        loopback = loopback_host(host)
        clients = info.data.get("clients")
        if not loopback and clients is not None and all(_loopback(n) for n in clients):
            raise ValueError(
                f"{value} is reachable from other hosts: list the networks of the MTAs"
                f" allowed to connect in {section}.clients (the default is loopback only)"
            )
        return value

    return check


def clients_field(service: str) -> Any:
    return Field(
        default=LOOPBACK_ONLY,
        description=f"Networks (CIDR) allowed to connect to the {service}; other peers are closed at once, logged and counted. A non-loopback listen needs it set (the default is loopback only).",
    )


class PolicySettings(Section):
    clients: list[str] = clients_field("policy service")
    listen: str = Field(
        default="",
        description="Postfix policy service (check_policy_service) endpoint: HOST:PORT or a unix socket path (empty = off).",
    )
    timeout: float = Field(
        default=60.0,
        ge=1.0,
        description="Seconds to answer one policy request (the harvest tarpit and the directory included); past it the answer is DEFER_IF_PERMIT. Keep it under Postfix's smtpd_policy_service_timeout (100 s).",
    )

    _clients = field_validator("clients")(check_networks)
    _listen = field_validator("listen")(side_listen("policy"))
