"""A gateway imports the libraries of the features its settings switch on, and no others: every
`mailmoat serve` and every worker pays for each import at start (the gateway's start-up time,
and the test suite's, which starts many of them). A real `mailmoat serve`, run with
PYTHONPROFILEIMPORTTIME (inherited by its workers), lists what it imported."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from mailmoat.console import users
from tests.support.ports import free_port
from tests.support.waiting import wait_until

OPTIONAL = {
    "argon2": "the console's password hashes",
    "dkim": "DKIM (dns.checks)",
    "nacl": "DKIM's ed25519-sha256",
    "cryptography": "DKIM's RSA by OpenSSL",
    "spf": "SPF (dns.checks)",
    "prometheus_client": "GET /metrics",
    "redis": 'store.backend = "redis"',
    "ldap3": "an LDAP recipient directory",
}
"""Top-level package -> the feature that needs it (off in the test's settings)."""


def _serve_imports(tmp_path: Path, config: str, workers: int = 2) -> tuple[set[str], str]:
    """Run serve until its start-up checks are logged, then stop it; the top-level names of
    every module its processes imported, and its log."""
    conf = tmp_path / "m.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{free_port()}"]\nworkers = {workers}\n'
        'hostname = "mx.example.test"\n'
        f'[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{tmp_path / "md"}"\n' + config
    )
    log = tmp_path / "log"
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)], stderr=out, env=env
        )
        try:
            wait_until(
                lambda: "startup_checks" in log.read_text() or proc.poll() is not None,
                "start-up checks logged",
                timeout=60,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    text = log.read_text()
    assert "startup_checks" in text, text[-2000:]
    names = set()
    for line in text.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            names.add(line.rpartition("|")[2].strip().split(".")[0])
    return names, text


def test_a_plain_gateway_imports_no_optional_library(tmp_path: Path) -> None:
    names, text = _serve_imports(tmp_path, "[dns]\nchecks = false\n")
    assert "mailmoat" in names and "click" in names  # the list is read as it is meant
    # the supervisor's imports, both workers' and the clean lane's: four imported the assembly
    assert len(re.findall(r"^import time:.*\| +mailmoat\.assembly$", text, re.M)) == 4
    assert sorted(names & OPTIONAL.keys()) == []


def test_dns_checks_import_their_libraries_at_start_not_at_the_first_message(
    tmp_path: Path,
) -> None:
    dead = free_port()  # no DNS server: the start-up check of the resolver fails fast
    config = f'[dns]\nnameservers = ["127.0.0.1:{dead}"]\ntimeout = 0.3\n'
    _, text = _serve_imports(tmp_path, config, workers=1)
    before_listening = text.partition(" info listening ")[0]
    for name in ("dkim", "spf", "nacl", "cryptography", "publicsuffixlist"):
        assert re.search(rf"^import time:.*\| +{name}$", before_listening, re.M), name


def test_the_console_hashes_its_dummy_password_when_it_loads_users(tmp_path: Path) -> None:
    """An unknown name is verified against a dummy hash (no user enumeration by timing): the
    hash is made when the users file is read at the console's start, not at import, and not
    by the first login either."""
    path = tmp_path / "users"
    users.add(path, "alice", "s3cret pass")
    users._dummy.cache_clear()
    table = users.load(path)
    assert users._dummy.cache_info().currsize == 1
    assert not users.verify(table, "mallory", "s3cret pass")  # against the dummy, made once
    assert users._dummy.cache_info().misses == 1
