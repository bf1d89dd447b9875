"""`mailmoat serve` with its packet filter, inside a network namespace of the test's own (see
tests/support/netns.py): started from a generated config, reached through its admin endpoint
and from addresses of the namespace's loopback, always stopped at the end of the block."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailmoat.server.admin import bans_path, fetch, request
from tests.support.netns import Netns
from tests.support.waiting import wait_until

PORT = 2525  # the namespace is the test's own: no other listener there
TABLE = "mmtest"
DROPPED = 1.5  # seconds a connect waits before it counts as dropped (SYN unanswered)


class Served:
    def __init__(
        self, ns: Netns, proc: subprocess.Popen[bytes], log: Path, admin: Path, port: int
    ) -> None:
        self.ns, self.proc, self.log, self.admin, self.port = ns, proc, log, admin, port

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def ban(self, target: str, seconds: float) -> None:
        """What `mailmoat ban TARGET --for SECONDS` does (the admin endpoint's /bans)."""
        status, body = request(str(self.admin), bans_path(target, seconds), method="POST")
        assert status == 200, body

    def unban(self, target: str) -> None:
        status, body = request(str(self.admin), bans_path(target), method="DELETE")
        assert status == 200, body

    def counters(self) -> dict[str, int]:
        return fetch(str(self.admin))["counters"]  # type: ignore[return-value]

    def gauges(self) -> dict[str, float]:
        return fetch(str(self.admin))["gauges"]  # type: ignore[return-value]

    def greeting(self, source: str) -> bytes:
        """The first line mailmoat sends a connection from `source`."""
        with self.ns.connect(source, self.port, timeout=10) as sock:
            return sock.recv(512)

    def dropped(self, source: str) -> bool:
        """A connect from `source` gets no answer at all (its SYN is dropped)."""
        try:
            self.ns.connect(source, self.port, timeout=DROPPED).close()
        except TimeoutError:
            return True
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


@contextmanager
def served(
    tmp_path: Path,
    ns: Netns,
    *,
    wrapper: tuple[str, ...] = (),
    port: int = PORT,
    table: str = TABLE,
    **settings: Any,
) -> Iterator[Served]:
    """`mailmoat serve` inside `ns` on `port` with the packet filter on, its table named
    `table` (`settings`: "section.key" -> value), until the block ends."""
    admin = tmp_path / "admin.sock"
    values: dict[str, Any] = {
        "server.listen": [f"127.0.0.1:{port}", f"[::1]:{port}"],
        "server.hostname": "mx.example.test",
        "server.workers": 1,
        "server.uvloop": False,
        "domains.local": ["example.test"],
        "maildir.path": str(tmp_path / "Maildir"),
        "admin.listen": str(admin),
        "dns.checks": False,
        "server.drain_time": 0,
        "packetfilter.backend": "nftables",
        "packetfilter.table": table,
    }
    values.update(settings)
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".")
        sections.setdefault(section, []).append(f"{name} = {_toml(value)}")
    config = tmp_path / "mailmoat.toml"
    config.write_text("".join(f"[{s}]\n" + "\n".join(v) + "\n" for s, v in sections.items()))
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ns.command(*wrapper, sys.executable, "-m", "mailmoat", "serve", "-c", str(config)),
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    running = Served(ns, proc, log, admin, port)
    try:
        wait_until(
            lambda: " listening " in running.text() or proc.poll() is not None,
            "mailmoat listening",
            timeout=60,
        )
        assert proc.poll() is None, running.text()
        yield running
    finally:
        running.stop()


def addresses(ns: Netns, name: str, table: str = TABLE) -> set[str]:
    """The elements of set `name` of `table`, as text (a network as addr/len)."""
    out = set()
    for item in ns.elements(table, name):
        val = item["elem"]["val"] if isinstance(item, dict) and "elem" in item else item
        if isinstance(val, dict) and "prefix" in val:
            val = f"{val['prefix']['addr']}/{val['prefix']['len']}"
        out.add(str(val))
    return out


def tables(ns: Netns) -> set[str]:
    """The names of the namespace's tables."""
    return {item["table"]["name"] for item in ns.ruleset() if "table" in item}
