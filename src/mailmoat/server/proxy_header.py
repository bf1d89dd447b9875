"""The PROXY protocol header (HAProxy's spec, versions 1 and 2): bytes in, an address out.

A load balancer in front of the gateway opens its own TCP connection for each client and
starts it with one header saying who the client is. This module only reads such a header; it
never touches a socket. The listener calls `header_length` on what it has read so far, to
learn how many bytes the header takes (so it never reads past it into the client's SMTP), then
`parse` on exactly those bytes. Every malformed header raises `ProxyHeaderError`, and nothing
else: the caller closes the connection.

What is accepted:
- v1: `PROXY TCP4|TCP6 SRC DST SPORT DPORT\\r\\n` (at most 107 octets), and
  `PROXY UNKNOWN...\\r\\n`, which the spec says carries no client: taken as LOCAL.
- v2: the 12-octet signature, version 2, command LOCAL (any family, address block skipped) or
  PROXY over TCP (`AF_INET`/`AF_INET6` + `STREAM`); the TLVs after the addresses are skipped,
  within `PROXY_V2_MAX_LENGTH`. PROXY over UDP, `AF_UNIX` or `AF_UNSPEC` is refused: the gateway
  admits TCP clients by address, and a proxied connection without one cannot be admitted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from mailmoat.limits import PROXY_V2_MAX_LENGTH

V1_MAX = 107
"""Longest v1 header, CRLF included (the spec's bound: `PROXY UNKNOWN` with two IPv6 ends)."""
V2_FIXED = 16
"""The fixed part of a v2 header: signature, version/command, family, length."""
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "

_V2_ADDRESS_BLOCK = {0x11: 12, 0x21: 36}  # TCP over IPv4: 4+4+2+2; over IPv6: 16+16+2+2
_PORT = re.compile(r"0|[1-9][0-9]{0,4}")


class ProxyHeaderError(ValueError):
    """The header is malformed (the message says how, for the log)."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed header. `local`: the proxy's own connection (a health check), no client;
    otherwise `source` is the client and `destination` the address it connected to."""

    version: int
    local: bool
    source: tuple[str, int] | None = None
    destination: tuple[str, int] | None = None


LOCAL_V1 = ProxyHeader(1, True)


def header_length(data: bytes) -> int | None:
    """The length of the header at the start of `data`, once `data` shows it; None while more
    octets are needed. Raises ProxyHeaderError as soon as `data` cannot start a header."""
    if data[:12] == V2_SIGNATURE[: len(data)]:
        if len(data) < V2_FIXED:
            return None
        _check_v2_version(data[12])
        length = int.from_bytes(data[14:16], "big")
        if length > PROXY_V2_MAX_LENGTH:
            raise ProxyHeaderError(f"v2 address block of {length} octets is too long")
        return V2_FIXED + length
    if data[:6] != V1_PREFIX[: len(data)]:
        raise ProxyHeaderError("no PROXY protocol signature")
    head = data[:V1_MAX]
    lf = head.find(b"\n")
    if lf >= 0:
        if lf == 0 or head[lf - 1] != 0x0D:
            raise ProxyHeaderError("v1 line ends without CRLF")
        return lf + 1
    if len(head) >= V1_MAX:
        raise ProxyHeaderError(f"v1 line without CRLF in {V1_MAX} octets")
    return None


def parse(data: bytes) -> ProxyHeader:
    """The header that is exactly `data` (as long as `header_length` said)."""
    if header_length(data) != len(data):
        raise ProxyHeaderError("incomplete header")
    if data.startswith(V2_SIGNATURE):
        return _parse_v2(data)
    return _parse_v1(data)


def _check_v2_version(byte: int) -> None:
    if byte >> 4 != 2:
        raise ProxyHeaderError(f"v2 signature with version {byte >> 4}")
    if byte & 0x0F > 1:
        raise ProxyHeaderError(f"v2 command {byte & 0x0F} is neither LOCAL nor PROXY")


def _parse_v2(data: bytes) -> ProxyHeader:
    command, family = data[12] & 0x0F, data[13]
    if command == 0:  # LOCAL: the proxy's own connection; whatever follows is ignored
        return ProxyHeader(2, True)
    size = _V2_ADDRESS_BLOCK.get(family)
    if size is None:
        raise ProxyHeaderError(f"v2 PROXY with family/transport 0x{family:02x} (not TCP/IP)")
    block = data[V2_FIXED:]
    if len(block) < size:
        raise ProxyHeaderError(f"v2 address block of {len(block)} octets, {size} needed")
    n = (size - 4) // 2
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    if n == 4:
        src, dst = IPv4Address(block[:4]), IPv4Address(block[4:8])
    else:
        src, dst = IPv6Address(block[:16]), IPv6Address(block[16:32])
    sport = int.from_bytes(block[2 * n : 2 * n + 2], "big")
    dport = int.from_bytes(block[2 * n + 2 : 2 * n + 4], "big")
    return ProxyHeader(2, False, (str(src), sport), (str(dst), dport))


def _parse_v1(data: bytes) -> ProxyHeader:
    try:
        line = data[:-2].decode("ascii")
    except UnicodeDecodeError:
        raise ProxyHeaderError("v1 line is not ASCII") from None
    parts = line.split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return LOCAL_V1  # the spec: ignore the rest, use the connection's own ends
    if len(parts) != 6:
        raise ProxyHeaderError("v1 line is not PROXY PROTO SRC DST SPORT DPORT")
    _, proto, src, dst, sport, dport = parts
    if proto not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1 protocol {proto[:8]!r} is not TCP4, TCP6 or UNKNOWN")
    version = 4 if proto == "TCP4" else 6
    return ProxyHeader(
        1,
        False,
        (_v1_address(src, version), _v1_port(sport)),
        (_v1_address(dst, version), _v1_port(dport)),
    )


def _v1_address(text: str, version: int) -> str:
    try:
        ip = ip_address(text)
    except ValueError:
        raise ProxyHeaderError(f"v1 address {text[:40]!r} is not an IP address") from None
    if ip.version != version or "%" in text:
        raise ProxyHeaderError(f"v1 address {text[:40]!r} is not an IPv{version} address")
    return str(ip)


def _v1_port(text: str) -> int:
    if not _PORT.fullmatch(text) or int(text) > 65535:
        raise ProxyHeaderError(f"v1 port {text[:8]!r} is not 0-65535")
    return int(text)
