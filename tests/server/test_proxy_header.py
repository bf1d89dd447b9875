"""The PROXY header codec: the headers HAProxy sends, each named malformed case, and a fuzz
test that it never raises anything but its own error nor asks for more than its bound."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmoat.limits import PROXY_V2_MAX_LENGTH
from mailmoat.server.proxy_header import (
    V1_MAX,
    V2_FIXED,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderError,
    header_length,
    parse,
)


def v2(command: int = 1, family: int = 0x11, block: bytes = b"", version: int = 2) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([version << 4 | command, family])
        + struct.pack("!H", len(block))
        + block
    )


def tcp4(src: str, dst: str, sport: int, dport: int) -> bytes:
    return IPv4Address(src).packed + IPv4Address(dst).packed + struct.pack("!HH", sport, dport)


def tcp6(src: str, dst: str, sport: int, dport: int) -> bytes:
    return IPv6Address(src).packed + IPv6Address(dst).packed + struct.pack("!HH", sport, dport)


def whole(data: bytes) -> ProxyHeader:
    """Parse `data` as the codec's caller does: it must say its own length first."""
    assert header_length(data) == len(data)
    return parse(data)


# ---------------------------------------------------------------- well-formed
def test_v1_tcp4_and_tcp6() -> None:
    h = whole(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n")
    assert h == ProxyHeader(1, False, ("192.0.2.7", 56324), ("198.51.100.1", 25))
    h = whole(b"PROXY TCP6 2001:db8::7 2001:db8::1 65535 0\r\n")
    assert h.source == ("2001:db8::7", 65535) and h.destination == ("2001:db8::1", 0)


def test_v1_unknown_is_local_whatever_follows() -> None:
    assert whole(b"PROXY UNKNOWN\r\n").local
    assert whole(b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n").source is None


def test_v1_of_the_longest_length_is_read() -> None:
    a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    line = f"PROXY UNKNOWN {a} {a} 65535 65535\r\n".encode()
    assert len(line) == V1_MAX
    assert whole(line).local


def test_v2_as_haproxy_sends_it() -> None:
    """send-proxy-v2 in mode tcp: 28 octets, TCP over IPv4, no TLVs."""
    data = v2(block=tcp4("127.0.0.77", "127.0.0.1", 40000, 2525))
    assert len(data) == 28
    assert whole(data) == ProxyHeader(2, False, ("127.0.0.77", 40000), ("127.0.0.1", 2525))


def test_v2_ipv6_with_tlvs_skipped() -> None:
    tlvs = b"\x01\x00\x02h2" + b"\x05\x00\x04abcd"  # ALPN, UNIQUE_ID
    h = whole(v2(family=0x21, block=tcp6("2001:db8::9", "::1", 1, 25) + tlvs))
    assert h.source == ("2001:db8::9", 1)


def test_v2_local_ignores_its_address_block() -> None:
    """option smtpchk: 16 octets, LOCAL, no address; a LOCAL with a block is as good."""
    assert whole(v2(command=0, family=0x00)) == ProxyHeader(2, True)
    assert whole(v2(command=0, family=0x11, block=tcp4("1.2.3.4", "5.6.7.8", 1, 2))).local


def test_length_is_known_from_a_prefix_and_only_then() -> None:
    line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n"
    for n in range(len(line)):
        assert header_length(line[:n]) is None
    assert header_length(line + b"EHLO x\r\n") == len(line)
    data = v2(block=tcp4("1.2.3.4", "5.6.7.8", 1, 2))
    for n in range(V2_FIXED):
        assert header_length(data[:n]) is None
    assert header_length(data[:V2_FIXED]) == len(data)


# ---------------------------------------------------------------- malformed
BAD_LENGTH = {
    "bad signature": b"EHLO client.example\r\n",
    "v1 prefix mistyped": b"PROXY\tTCP4",
    "v2 signature broken": V2_SIGNATURE[:11] + b"X" + b"\x21\x11\x00\x0c",
    "wrong version 1 in v2": v2(version=1),
    "wrong version 3": v2(version=3),
    "v2 command 2": v2(command=2),
    "oversize length": V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", PROXY_V2_MAX_LENGTH + 1),
    "v1 without CRLF in 107 bytes": b"PROXY TCP4 " + b"1" * 200,
    "v1 bare LF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
}


@pytest.mark.parametrize("data", BAD_LENGTH.values(), ids=BAD_LENGTH.keys())
def test_malformed_before_its_length_is_known(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        header_length(data)
    with pytest.raises(ProxyHeaderError):
        parse(data)


BAD_HEADER = {
    "truncated v2 address block": v2(block=tcp4("1.2.3.4", "5.6.7.8", 1, 2)[:11]),
    "truncated v2 ipv6 block": v2(family=0x21, block=tcp4("1.2.3.4", "5.6.7.8", 1, 2)),
    "unknown family 0x41": v2(family=0x41, block=b"\x00" * 12),
    "AF_UNIX": v2(family=0x31, block=b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")),
    "AF_UNSPEC with PROXY": v2(family=0x00),
    "UDP over IPv4": v2(family=0x12, block=tcp4("1.2.3.4", "5.6.7.8", 1, 2)),
    "v1 unknown protocol": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 too few fields": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1 double space": b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 port too big": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 25\r\n",
    "v1 negative port": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 25\r\n",
    "v1 port with leading zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 025 25\r\n",
    "v1 port not digits": b"PROXY TCP4 1.2.3.4 5.6.7.8 2\xd9\xa3 25\r\n",
    "v1 address not IP": b"PROXY TCP4 mx.example 5.6.7.8 1 2\r\n",
    "v1 IPv4 leading zero": b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n",
    "v1 octet over 255": b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
    "v1 TCP4 with IPv6": b"PROXY TCP4 ::1 ::1 1 2\r\n",
    "v1 TCP6 with IPv4": b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1 scoped IPv6": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "v1 not ASCII": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \xff\r\n",
    "v1 CR inside": b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
}


@pytest.mark.parametrize("data", BAD_HEADER.values(), ids=BAD_HEADER.keys())
def test_malformed_header(data: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        parse(data)


def test_parse_wants_exactly_one_header() -> None:
    line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    with pytest.raises(ProxyHeaderError):
        parse(line[:-1])  # truncated
    with pytest.raises(ProxyHeaderError):
        parse(line + b"QUIT\r\n")  # the client's bytes are not the header's


# ---------------------------------------------------------------- fuzz
PREFIXES = [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", V2_SIGNATURE, V2_SIGNATURE + b"\x21"]


@given(st.sampled_from(PREFIXES), st.binary(max_size=300))
def test_fuzz_only_its_own_error_and_a_bounded_length(prefix: bytes, tail: bytes) -> None:
    data = prefix + tail
    try:
        n = header_length(data)
    except ProxyHeaderError:
        return
    if n is None:  # more needed: only while the data is shorter than the bound
        assert len(data) < max(V1_MAX, V2_FIXED)
        return
    assert n <= max(V1_MAX, V2_FIXED + PROXY_V2_MAX_LENGTH)
    if n <= len(data):
        try:
            h = parse(data[:n])
        except ProxyHeaderError:
            return
        assert h.local or (h.source is not None and 0 <= h.source[1] <= 65535)


@given(
    st.sampled_from(["TCP4", "TCP6"]),
    st.ip_addresses(v=4) | st.ip_addresses(v=6),
    st.integers(0, 65535),
)
def test_fuzz_v1_roundtrip(proto: str, ip: IPv4Address | IPv6Address, port: int) -> None:
    line = f"PROXY {proto} {ip} {ip} {port} 25\r\n".encode()
    wanted = 4 if proto == "TCP4" else 6
    if ip.version != wanted:
        with pytest.raises(ProxyHeaderError):
            whole(line)
        return
    assert whole(line).source == (str(ip), port)
