"""A private redis-server on a free loopback port, for the Redis store's tests.

No persistence (`--save ''`, `--appendonly no`), its own directory, run in the foreground as
a child of the test (so `pause`/`resume` can send it SIGSTOP/SIGCONT) and always stopped in
teardown, also after a failure. `shutdown` + `start` restart it on the same port with no data
and no functions, as a crashed Redis comes back. Given a network namespace (`ns`), it runs
and is reached inside it. With `tls`, it also listens for TLS (`--tls-port`, a self-signed
certificate from tests/support/tls.py; `tls_url` trusts it, `untrusted_tls_url` does not).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.netns import Netns
from tests.support.ports import LOOPBACK, free_port
from tests.support.tls import self_signed_cert
from tests.support.waiting import wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def available() -> bool:
    return os.access(REDIS_SERVER, os.X_OK)


class RedisServer:
    def __init__(self, workdir: Path, ns: Netns | None = None, tls: bool = False) -> None:
        self.dir = workdir
        self.ns = ns
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.cert = workdir / "cert.pem"
        self.socket = workdir / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def tls_url(self) -> str:
        return f"{self.untrusted_tls_url}?ssl_ca_certs={self.cert}"

    @property
    def untrusted_tls_url(self) -> str:
        return f"rediss://{LOOPBACK}:{self.tls_port}/0"

    def _tls_options(self) -> list[str]:
        if not self.tls_port:
            return []
        if not self.cert.exists():
            self_signed_cert(self.dir, (LOOPBACK,))
        key = self.dir / "key.pem"
        return ["--tls-port", str(self.tls_port), "--tls-cert-file", str(self.cert),
                "--tls-key-file", str(key), "--tls-ca-cert-file", str(self.cert),
                "--tls-auth-clients", "no"]  # fmt: skip

    def start(self) -> RedisServer:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = open(self.dir / "redis.log", "ab")  # noqa: SIM115 - the child keeps it
        with log:
            prefix = self.ns.command() if self.ns is not None else []
            self.proc = subprocess.Popen(
                [*prefix, REDIS_SERVER, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                 "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no",
                 "--unixsocket", str(self.socket), "--unixsocketperm", "700",
                 *self._tls_options()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        wait_until(lambda: self.command("PING") == b"+PONG", "redis-server answers PING")
        return self

    def command(self, *words: str) -> bytes | None:
        """One inline command on a fresh connection; its first reply line, None on no answer."""
        try:
            with self._connect() as s:
                s.sendall(" ".join(words).encode() + b"\r\n")
                return s.recv(4096).split(b"\r\n", 1)[0]
        except OSError:
            return None

    def _connect(self) -> socket.socket:
        if self.ns is None:
            return socket.create_connection((LOOPBACK, self.port), timeout=2)
        sock = self.ns.socket()
        try:
            sock.settimeout(2)
            sock.connect((LOOPBACK, self.port))
        except BaseException:
            sock.close()
            raise
        return sock

    def pause(self) -> None:
        """Hang it: connections are accepted by the kernel, nothing answers."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def shutdown(self) -> None:
        """Stop it without saving (connections are refused until `start`)."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@contextmanager
def redis_server(
    workdir: Path, ns: Netns | None = None, tls: bool = False
) -> Iterator[RedisServer]:
    server = RedisServer(workdir, ns, tls)
    try:
        yield server.start()
    finally:
        server.shutdown()
