"""A private HAProxy (`haproxy -db -f FILE`, Debian's 2.6) on loopback, in front of mailmoat.

`contrib_config` turns contrib/haproxy.cfg, the example that docs/proxy-protocol.md ships,
into one for the test: its listen address and servers replaced by loopback ones, its health
checks made frequent, its maxconn made small; every other setting is the example's own, so
the example is what the test runs. `running_haproxy` starts it in the foreground on its own
ports, waits until it listens, and stops it in teardown (also when the test fails). Its log
(checks going up or down, one line per connection) is on `HAProxy.output()`.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.ports import listening_in
from tests.support.waiting import wait_until

CONTRIB = Path(__file__).resolve().parents[2] / "contrib" / "haproxy.cfg"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

needs_haproxy = pytest.mark.skipif(
    not Path(HAPROXY).exists(), reason="haproxy not installed (scripts/test installs it)"
)


def contrib_config(port: int, servers: list[int], inter: str = "300ms") -> str:
    """contrib/haproxy.cfg listening on 127.0.0.1:`port`, balancing over mailmoat nodes on
    127.0.0.1:`servers`, checking them every `inter`."""
    text = CONTRIB.read_text()
    text, binds = re.subn(r"(?m)^(\s+)bind :25$", rf"\1bind 127.0.0.1:{port}", text)
    lines = [ln for ln in text.splitlines() if not re.match(r"\s+server mx\d+ ", ln)]
    text = "\n".join(lines) + "\n"
    text, inters = re.subn(r"\binter \S+", f"inter {inter}", text)
    # sized for a test: the example's maxconn needs more descriptors than a test may open
    text, sized = re.subn(r"\bmaxconn \d+", "maxconn 1000", text)
    assert binds == 1 and inters == 1 and sized, "contrib/haproxy.cfg changed shape: see here"
    text += "".join(f"    server mx{i} 127.0.0.1:{p}\n" for i, p in enumerate(servers, 1))
    return text


class HAProxy:
    def __init__(self, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running_haproxy(directory: Path, config: str, port: int) -> Iterator[HAProxy]:
    """HAProxy with `config` (which listens on 127.0.0.1:`port`), stopped on leaving."""
    cfg = directory / "haproxy.cfg"
    cfg.write_text(config)
    check = subprocess.run([HAPROXY, "-c", "-q", "-f", str(cfg)], capture_output=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    log_path = directory / "haproxy.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(cfg)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        haproxy = HAProxy(proc, port, log_path)
        try:
            wait_until(
                lambda: proc.poll() is not None or listening_in(proc.pid, port),
                "haproxy listening",
            )
            assert proc.poll() is None, haproxy.output()
            yield haproxy
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # -db: a hard stop, at once
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
