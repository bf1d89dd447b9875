"""A private dnsmasq on 127.0.0.1 for the DNS tests, and a name server that never answers.

dnsmasq runs in the foreground from a temporary folder with its own configuration: no
upstream servers (--no-resolv), no /etc/hosts, authoritative-style answers ("local=") for the
test zones so unknown names get NXDOMAIN, and every query logged, so tests can count what
reached the server. It can be stopped and started again on the same port ("DNS down" and
"DNS back").
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import dns.message
import dns.query

from tests.support.host import PeerError, require_binary
from tests.support.ports import free_udp_port

LOCAL_ZONES = ("test", "in-addr.arpa", "ip6.arpa")


class Dnsmasq:
    """dnsmasq serving `records` (dnsmasq option lines such as "host-record=a.test,127.0.0.2")."""

    def __init__(self, root: Path, records: list[str], ttl: int = 300) -> None:
        self.binary = require_binary("dnsmasq", "/usr/sbin/dnsmasq")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        self.conf = root / "dnsmasq.conf"
        self.log = root / "dnsmasq.log"
        lines = [
            f"port={self.port}",
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "no-poll",
            "log-queries",
            "log-facility=-",
            f"local-ttl={ttl}",
            "cache-size=0",
            *(f"local=/{zone}/" for zone in LOCAL_ZONES),
            *records,
        ]
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Dnsmasq:
        cmd = [self.binary, "--keep-in-foreground", f"--conf-file={self.conf}", "--pid-file="]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerError(f"dnsmasq exited with {self.proc.returncode}: {self.log_text()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise PeerError(f"dnsmasq did not answer within 10 s: {self.log_text()}")

    def _answers(self) -> bool:
        query = dns.message.make_query("ready.probe.test", "A")
        try:
            dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.2)
        except (OSError, dns.exception.DNSException):
            return False
        return True

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def queries(self, name: str | None = None) -> int:
        """Queries the server has logged so far (for `name` only when given)."""
        lines = [x for x in self.log_text().splitlines() if "query[" in x]
        if name is not None:
            lines = [x for x in lines if f" {name} from" in x]
        return len(lines)


class SilentServer:
    """A UDP and TCP "name server" on 127.0.0.1 that reads queries and never answers."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.port = int(self.udp.getsockname()[1])
        self.tcp = socket.socket()
        with contextlib.suppress(OSError):
            self.tcp.bind(("127.0.0.1", self.port))
            self.tcp.listen(16)
        self.received = 0
        self._stop = threading.Event()
        self.udp.settimeout(0.1)
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _drain(self) -> None:
        while not self._stop.is_set():
            try:
                self.udp.recvfrom(4096)
                self.received += 1
            except TimeoutError:
                continue
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.udp.close()
        self.tcp.close()
