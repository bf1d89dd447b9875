"""Settings that are valid one by one but unsafe or unworkable (the red-team probe): each gets
one clear line from `config check` and from `serve` before it starts, never "ok" and never a
traceback. Exemptions covering the Internet, an admin token others can read, listen addresses
that cannot be bound or are listed twice, a kernel pseudo-file, timeouts no client can meet,
delivery to the gateway itself, a longest ban shorter than the first."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli import main

BASE = '[domains]\nlocal = ["example.test"]\n[maildir]\npath = "{md}"\n'


def _write(tmp_path: Path, body: str) -> Path:
    f = tmp_path / "gw.toml"
    f.write_text(BASE.format(md=tmp_path / "md") + body)
    return f


def _lines(tmp_path: Path, body: str, command: str = "check") -> tuple[int, list[str]]:
    args = ["config", "check"] if command == "check" else ["serve", "-c"]
    result = CliRunner().invoke(main, [*args, str(_write(tmp_path, body))])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output.splitlines()


def _token(tmp_path: Path, mode: int) -> Path:
    token = tmp_path / "token"
    token.write_text("s3cret-token-0123456789\n")
    token.chmod(mode)
    return token


@pytest.mark.parametrize(
    ("body", "key", "words"),
    [
        ('[admission]\nallow_networks = ["0.0.0.0/0"]\n', "admission.allow_networks", "Internet"),
        ('[admission]\nallow_networks = ["::/0"]\n', "admission.allow_networks", "Internet"),
        ('[score]\nexempt_networks = ["0.0.0.0/1"]\n', "score.exempt_networks", "Internet"),
        ('[harvest]\nexempt_networks = ["2000::/3"]\n', "harvest.exempt_networks", "Internet"),
        # IPv6 prefixes that embed the IPv4 Internet: Teredo, NAT64 (well-known, local-use)
        ('[admission]\nallow_networks = ["2001::/32"]\n', "admission.allow_networks", "Internet"),
        ('[score]\nexempt_networks = ["64:ff9b::/96"]\n', "score.exempt_networks", "Internet"),
        (
            '[harvest]\nexempt_networks = ["64:ff9b:1::/48"]\n',
            "harvest.exempt_networks",
            "Internet",
        ),
        (
            '[server]\nlisten = ["[::ffff:127.0.0.1]:2600"]\n',
            "server.listen",
            "IPv4-mapped IPv6 address, which cannot be bound: write 127.0.0.1:2600",
        ),
        ('[server]\nlisten = ["127.0.0.1:2600", "127.0.0.1:2600"]\n', "server.listen", "twice"),
        ('[server]\nlisten = ["[::1]:2600", "[0:0::1]:2600"]\n', "server.listen", "twice"),
        ('[directory]\nstatic_file = "/proc/self/mem"\n', "directory.static_file", "not a regular"),
        (
            '[ldap]\nbind_password_file = "/proc/self/environ"\n',
            "ldap.bind_password_file",
            "not a regular",
        ),
        ("[timeouts]\ngreeting = 1e-300\n", "timeouts.greeting", "at least 1 second"),
        ("[timeouts]\ncommand = 0.5\n", "timeouts.command", "at least 1 second"),
        ("[timeouts]\ndata = 0.001\n", "timeouts.data", "at least 1 second"),
        ("[timeouts]\nsession = 0.1\n", "timeouts.session", "at least 1 second"),
        (
            '[server]\nlisten = ["127.0.0.1:2600"]\n[relay]\ndownstream = "127.0.0.1:2600"\n',
            "relay.downstream",
            "own server.listen 127.0.0.1:2600: a mail loop",
        ),
        (
            '[server]\nlisten = ["0.0.0.0:25"]\n[relay]\ndownstream = "127.0.0.1:25"\n',
            "relay.downstream",
            "a mail loop",
        ),
        (
            '[server]\nlisten = ["[::1]:2600"]\n[directory]\ndefault = "callahead"\n'
            '[callahead]\nserver = "[::1]:2600"\n',
            "callahead.server",
            "a mail loop",
        ),
        (
            '[server]\nlisten = ["127.0.0.1:2600"]\n[admin]\nlisten = "127.0.0.1:2600"\n',
            "admin.listen",
            "the port is taken",
        ),
        ("[bans]\nduration = 600\nmax_duration = 60\n", "bans.max_duration", "shorter"),
        # a trusted proxy or side-service peer names the client address: never the Internet
        ('[server]\nproxy_protocol = ["0.0.0.0/0"]\n', "server.proxy_protocol", "any client"),
        ('[server]\nproxy_protocol = ["::/0"]\n', "server.proxy_protocol", "any client"),
        ('[server]\nproxy_protocol = ["2000::/3"]\n', "server.proxy_protocol", "any client"),
        ('[server]\nproxy_protocol = ["128.0.0.0/1"]\n', "server.proxy_protocol", "any client"),
        ('[milter]\nclients = ["0.0.0.0/0"]\n', "milter.clients", "any client"),
        ('[policy]\nclients = ["2001::/32"]\n', "policy.clients", "any client"),
        ('[milter]\nlisten = "0.0.0.0:2600"\n', "milter.listen", "milter.clients"),
        ('[policy]\nlisten = "[::]:2600"\n', "policy.listen", "policy.clients"),
        (
            '[policy]\nlisten = "192.0.2.1:2600"\nclients = ["127.0.0.0/8"]\n',
            "policy.listen",
            "reachable from other hosts",
        ),
    ],
)
def test_refused_with_one_line(tmp_path: Path, body: str, key: str, words: str) -> None:
    for command in ("check", "serve"):
        code, lines = _lines(tmp_path, body, command)
        assert code == 2, lines
        assert len(lines) == 1 and lines[0].startswith(f"config error: {key}: "), lines
        assert words in lines[0], lines


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_an_admin_token_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    token = _token(tmp_path, mode)
    code, lines = _lines(tmp_path, f'[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"\n')
    assert code == 2
    assert lines == [
        f"config error: admin.token_file: {token} is readable or writable by others"
        f" (mode {mode:o}); chmod 600 it"
    ]


def test_admin_token_file_naming_passwd_is_refused(tmp_path: Path) -> None:
    code, lines = _lines(tmp_path, '[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "/etc/passwd"\n')
    assert code == 2 and len(lines) == 1 and lines[0].startswith("config error: admin.token_file")


@pytest.mark.parametrize(
    "body",
    [
        # the width rule lets private and local space and narrow public networks through
        '[admission]\nallow_networks = ["10.0.0.0/8", "198.51.100.0/24", "fc00::/7"]\n'
        '[score]\nexempt_networks = ["192.168.0.0/16", "2001:db8::/32", "64:ff9b::c000:200/120"]\n'
        '[harvest]\nexempt_networks = ["127.0.0.0/8", "203.0.0.0/16"]\n',
        '[server]\nlisten = ["127.0.0.1:2600", "[::1]:2600", "127.0.0.1:0", "127.0.0.1:0"]\n'
        '[relay]\ndownstream = "127.0.0.1:2601"\n[admin]\nlisten = "127.0.0.1:2602"\n',
        '[server]\nproxy_protocol = ["10.0.0.0/8", "198.51.100.7/32", "fd00::/8"]\n'
        '[milter]\nlisten = "0.0.0.0:2603"\nclients = ["10.1.0.0/16", "127.0.0.1/32"]\n'
        '[policy]\nlisten = "[::]:2604"\nclients = ["2001:db8::/32"]\n',
        "[timeouts]\ngreeting = 1\ncommand = 1\ndata = 1\nsession = 1\n"
        "[bans]\nduration = 60\nmax_duration = 60\n",
    ],
)
def test_sane_settings_still_pass(tmp_path: Path, body: str) -> None:
    code, lines = _lines(tmp_path, body)
    assert code == 0 and lines[-1].endswith(": ok"), lines


def test_a_private_admin_token_passes(tmp_path: Path) -> None:
    token = _token(tmp_path, 0o600)
    code, lines = _lines(tmp_path, f'[admin]\nlisten = "127.0.0.1:0"\ntoken_file = "{token}"\n')
    assert code == 0, lines
    assert os.stat(token).st_mode & 0o777 == 0o600
