"""A network namespace of the test's own: its loopback, its nftables ruleset, processes and
sockets inside it, removed at the end (also on failure). Needs root; a test skips without it.

`ip netns add` makes it; `ip netns exec` runs a process inside; a socket is made inside from a
short-lived thread that joined the namespace (`setns` changes only the calling thread), and
once made it stays there whatever thread uses it.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CLONE_NEWNET = 0x40000000

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None,
    reason="network namespaces and nftables need root, ip (iproute2) and nft (nftables)",
)


class Netns:
    def __init__(self, name: str) -> None:
        self.name = name
        self.path = f"/run/netns/{name}"

    def command(self, *args: str) -> list[str]:
        """`args` as a command run inside the namespace."""
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args), capture_output=True, text=True, timeout=30, check=check
        )

    def socket(self, family: int = socket.AF_INET) -> socket.socket:
        """A TCP socket inside the namespace."""
        box: list[Any] = []

        def make() -> None:
            libc = ctypes.CDLL(None, use_errno=True)
            try:
                with open(self.path, "rb") as ns:
                    if libc.setns(ns.fileno(), CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), "setns")
                box.append(socket.socket(family, socket.SOCK_STREAM))
            except BaseException as err:
                box.append(err)

        thread = threading.Thread(target=make)
        thread.start()
        thread.join()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]  # type: ignore[no-any-return]

    def connect(self, source: str, port: int, timeout: float) -> socket.socket:
        """A connection from `source` (an address of the loopback) to 127.0.0.1:`port` (or
        ::1 for an IPv6 source); socket.timeout when the SYN goes unanswered."""
        v6 = ":" in source
        sock = self.socket(socket.AF_INET6 if v6 else socket.AF_INET)
        try:
            sock.settimeout(timeout)
            sock.bind((source, 0))
            sock.connect(("::1" if v6 else "127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        return sock

    def ruleset(self) -> list[dict[str, Any]]:
        """The namespace's whole nftables ruleset (`nft -j list ruleset`)."""
        out = self.run("nft", "-j", "list", "ruleset").stdout
        return [item for item in json.loads(out)["nftables"] if "metainfo" not in item]

    def elements(self, table: str, name: str) -> list[Any]:
        """The elements of set `name` of inet `table` ([] when it has none)."""
        out = self.run("nft", "-j", "list", "set", "inet", table, name).stdout
        for item in json.loads(out)["nftables"]:
            if "set" in item:
                return list(item["set"].get("elem", []))
        return []


@contextmanager
def netns() -> Iterator[Netns]:
    """A fresh namespace with its loopback up (127.0.0.0/8 and ::1), removed afterwards."""
    ns = Netns(f"mm-{secrets.token_hex(4)}")
    subprocess.run(["ip", "netns", "add", ns.name], check=True, timeout=30)
    try:
        subprocess.run(["ip", "-n", ns.name, "link", "set", "lo", "up"], check=True, timeout=30)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False, timeout=30)
