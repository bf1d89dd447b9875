"""DNS block and allow lists in Postfix postscreen's syntax (postscreen_dnsbl_sites):

    zone[=filter]*weight

`filter` matches the A record the list answers with: four dot-separated parts, each a number or
a bracketed set of numbers and ranges separated by ";" (`127.0.0.[2..11]`, `127.0.[0..255].[1;3]`).
Without a filter any answer counts. `*weight` defaults to 1; a negative weight marks an allow
list (DNSWL). The client's address is looked up as `<reversed address>.zone`: 4.3.2.1.zone for
1.2.3.4, the 32 nibbles in reverse for IPv6.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_ZONE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
_OCTET = re.compile(r"^(?:\d{1,3}|\[[0-9.;]+\])$")


@dataclass(frozen=True, slots=True)
class DnsList:
    zone: str
    filter: tuple[frozenset[int], ...] | None
    weight: int
    text: str
    """As written in the settings (for logs)."""

    def matches(self, address: str) -> bool:
        if self.filter is None:
            return True
        try:
            octets = ipaddress.IPv4Address(address).packed
        except ValueError:
            return False
        return all(o in allowed for o, allowed in zip(octets, self.filter, strict=True))

    def query_name(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip.version == 4:
            reverse = ".".join(reversed(str(ip).split(".")))
        else:
            reverse = ".".join(reversed(ip.exploded.replace(":", "")))
        return f"{reverse}.{self.zone}"


def _octet(part: str) -> frozenset[int]:
    if not _OCTET.match(part):
        raise ValueError(f"bad filter part {part!r}")
    if not part.startswith("["):
        values = {int(part)}
    else:
        values = set()
        for item in part[1:-1].split(";"):
            low, sep, high = item.partition("..")
            if not low.isdigit() or (sep and not high.isdigit()):
                raise ValueError(f"bad filter part {part!r}")
            values.update(range(int(low), int(high if sep else low) + 1))
    if not values or max(values) > 255:
        raise ValueError(f"filter part {part!r} is not within 0..255")
    return frozenset(values)


def parse_list(text: str) -> DnsList:
    """One list in postscreen syntax; ValueError with the reason when it is not."""
    rest, star, weight_text = text.strip().rpartition("*")
    if not star:
        rest, weight_text = text.strip(), "1"
    try:
        weight = int(weight_text)
    except ValueError:
        raise ValueError(f"{text!r}: weight must be an integer") from None
    zone, eq, filt = rest.partition("=")
    zone = zone.strip().rstrip(".").lower()
    if not _ZONE.match(zone) or ".." in zone or "." not in zone:
        raise ValueError(f"{text!r}: not a DNS zone")
    flt = None
    if eq:
        # dots inside brackets belong to ranges ([2..11]), not to the address
        parts = re.findall(r"\[[^\]]*\]|[^.]+", filt.strip())
        if len(parts) != 4:
            raise ValueError(f"{text!r}: the filter needs four parts like 127.0.0.[2..11]")
        try:
            flt = tuple(_octet(p) for p in parts)
        except ValueError as err:
            raise ValueError(f"{text!r}: {err}") from None
    if weight == 0:
        raise ValueError(f"{text!r}: a weight of 0 does nothing")
    return DnsList(zone, flt, weight, text.strip())
