"""Ports on loopback: one free for a peer to bind, and whether something listens on one.

Shared by the tests and bench/ (no pytest in here).
"""

from __future__ import annotations

import os
import socket
import sys

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel picks it).

    There is an unavoidable race between closing the probe socket and the peer binding the port;
    the fixtures retry with a fresh port when a bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def free_udp_port() -> int:
    """A port free for UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise OSError("no free port for the DNS server")


def _proc_net_addr(host: str) -> str:
    # /proc/net/tcp prints the IPv4 address as a native-endian 32-bit hex number.
    return f"{int.from_bytes(socket.inet_aton(host), sys.byteorder):08X}"


def is_listening(port: int, host: str = LOOPBACK) -> bool:
    """True if some socket LISTENs on host:port (or on 0.0.0.0:port).

    Reads /proc/net/tcp instead of connecting, so a readiness poll never opens an SMTP
    session that would show up in the peer's log.
    """
    wanted = {f"{_proc_net_addr(host)}:{port:04X}", f"00000000:{port:04X}"}
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A" and fields[1] in wanted:
                    return True
    except OSError:  # no procfs: fall back to a connect probe
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False
    return False


def listening_in(pid: int, port: int, host: str = LOOPBACK) -> bool:
    """True if process `pid` itself LISTENs on host:port: not some other test's server that
    took the port between free_port() and this process's bind (Linux /proc only)."""
    wanted = {f"{_proc_net_addr(host)}:{port:04X}", f"00000000:{port:04X}"}
    try:
        inodes = {
            target[len("socket:[") : -1]
            for fd in os.listdir(f"/proc/{pid}/fd")
            if (target := _readlink(f"/proc/{pid}/fd/{fd}")).startswith("socket:[")
        }
        with open("/proc/net/tcp", encoding="ascii") as f:
            next(f)
            return any(
                fields[3] == "0A" and fields[1] in wanted and fields[9] in inodes
                for fields in (line.split() for line in f)
            )
    except OSError:  # gone, or no procfs
        return False


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""
