"""What every settings section shares: the strict base model, sizes, and value parsers."""

from __future__ import annotations

import ipaddress
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, field_validator

from mailmoat import config_checks

KiB = 1024
MiB = 1024 * 1024


class Section(BaseModel):
    """A settings section: unknown keys, NaN and infinity are refused, values are checked."""

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


def default_of(section: type[BaseModel], name: str) -> Any:
    """The documented default of one setting, for a keyword default of a constructor that tests
    call without settings: the value stays written once, here in the settings."""
    return section.model_fields[name].get_default(call_default_factory=True)


def loopback_host(host: str) -> bool:
    """A listen address only this machine reaches: a loopback IP literal or `localhost`."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def split_endpoint(value: str) -> tuple[str, int]:
    """'host:port' or '[v6]:port' -> (host, port); ValueError when it is neither."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536 or not host.strip("[]"):
        raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:PORT), got {value!r}")
    return host.strip("[]"), int(port)


def check_endpoint(value: str) -> str:
    split_endpoint(value)
    return value


def check_networks(v: list[str]) -> list[str]:
    """Valid CIDR networks; an IPv4-mapped one is written as the IPv4 network it means (a
    client is matched by its IPv4 address, so ::ffff:198.51.100.0/120 would match no one)."""
    out = []
    for n in v:
        try:
            net = ipaddress.ip_network(n, strict=False)
        except ValueError as err:
            raise ValueError(f"not a network: {n!r} ({err})") from None
        plain = config_checks.plain_network(net)
        out.append(n if plain is net else str(plain))
    return out


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


Action = Literal["off", "log", "score", "tempfail", "reject"]
"""What a failed check does: nothing, a log line, points on the session score, 4xx, or 5xx."""
