"""Unsafe settings are refused (issue 10 item 11): by `config check` and by `serve` before it
starts, one line per problem, never a traceback, and never a hang on a file that does not end."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat import config
from mailmoat.cli import main
from tests.support.tls import self_signed_cert


def _problem(overrides: dict[str, object]) -> tuple[str, str]:
    with pytest.raises(config.ConfigError) as err:
        config.load(None, overrides)
    (problem,) = err.value.problems
    return problem


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("domains.relay_networks", ["0.0.0.0/0"], "open relay"),
        ("domains.relay_networks", ["::/0"], "open relay"),
        ("domains.relay_networks", ["0.0.0.0/1"], "open relay"),
        ("domains.relay_networks", ["128.0.0.0/1"], "open relay"),
        ("domains.relay_networks", ["2000::/3"], "open relay"),
        ("domains.relay_networks", ["64.0.0.0/8"], "open relay"),
        ("domains.relay_networks", ["2001:db8::/16"], "open relay"),
        ("domains.relay_networks", ["10.0.0.0/8", "198.51.0.0/15"], "open relay"),
        ("domains.relay_networks", ["::ffff:0:0/96"], "open relay"),  # = 0.0.0.0/0
        ("relay.helo_name", "mx.example\r\nRCPT TO:<x@evil.test>", "non-printing"),
        ("relay.helo_name", "mx.example\n", "non-printing"),
        ("relay.helo_name", "mx example", "host name"),
        ("relay.helo_name", "mx_1.example", "host name"),
        ("relay.helo_name", "-mx.example", "host name"),
        ("relay.helo_name", "mx..example", "host name"),
        ("relay.helo_name", "a" * 64 + ".example", "host name"),
        ("server.hostname", "mx.example\r\n250 fake", "non-printing"),
        ("server.hostname", "mx.example;evil", "host name"),
        ("server.hostname", "", "host name"),
        ("server.hostname", "mx.ex\u2028ample", "non-printing"),
        ("auth.authserv_id", "mx.example\r\nX-Evil: 1", "non-printing"),
        ("auth.authserv_id", "mx.example; spf=pass", "host name"),
        ("callahead.sender", "probe@example.test>\r\nDATA", "non-printing"),
        ("callahead.sender", "probe@ex ample.test", "not an address"),
        ("callahead.sender", "probe", "not an address"),
        ("domains.local", ["example.test\r\n"], "non-printing"),
        ("domains.local", ["exa mple.test"], "domain name"),
        ("domains.local", ["[127.0.0.1]"], "domain name"),
        ("domains.local", ["ex\u202eample.test"], "non-printing"),
        ("ldap.bind_dn", "cn=x\x00", "non-printing"),
        ("directory.recipient_delimiter", "\n", "non-printing"),
        ("timeouts.command", float("inf"), "finite"),
        ("timeouts.data", float("nan"), "finite"),
        ("relay.command_timeout", float("inf"), "finite"),
        ("bans.max_duration", 1e300, "at most"),
        ("callahead.positive_ttl", 1e12, "at most"),
        ("admission.max_connections", 10**30, "at most"),
        ("server.input_buffer", 2**31, "less than or equal"),
        ("server.spool_memory", 2**31, "less than or equal"),
    ],
)
def test_unsafe_value_refused_with_its_key(key: str, value: object, words: str) -> None:
    got_key, reason = _problem({key: value})
    assert got_key == key and words in reason, (got_key, reason)


def test_safe_values_pass() -> None:
    s = config.load(
        None,
        {
            "domains.relay_networks": [
                "10.0.0.0/8",
                "172.16.0.0/12",
                "127.0.0.0/8",
                "fc00::/7",
                "198.51.100.0/24",
                "198.51.0.0/16",
                "2001:db8::/32",
            ],
            "relay.helo_name": "gw-1.Example.test",
            "server.hostname": "mx.example.test",
            "auth.authserv_id": "mx.example.test",
            "callahead.sender": "probe+ca@example.test",
            "domains.local": ["Example.TEST.", "b\u00fccher.test", "xn--bcher-kva.test"],
            "bans.max_duration": 30 * 86400.0,
        },
    )
    assert s.domains.local == ["example.test", "b\u00fccher.test", "xn--bcher-kva.test"]
    assert config.load(None, {"relay.helo_name": ""}).relay.helo_name is None


def _check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def test_config_check_reports_unsafe_file_one_line_each(tmp_path: Path) -> None:
    f = tmp_path / "unsafe.toml"
    f.write_text(
        '[domains]\nlocal = ["example.test"]\nrelay_networks = ["0.0.0.0/0"]\n'
        '[relay]\nhelo_name = "gw\\r\\nMAIL FROM:<x@y>"\n'
        "[timeouts]\ncommand = inf\n"
    )
    code, out = _check(f)
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 3, out
    for key in ("domains.relay_networks", "relay.helo_name", "timeouts.command"):
        assert sum(line.startswith(f"config error: {key}: ") for line in lines) == 1, key


def test_config_check_of_dev_zero_returns_at_once_with_one_line() -> None:
    """A character device is never read (it could block or never end): one line, exit 2.
    Run as a real process with a bound, so a hang fails the test instead of holding it."""
    proc = subprocess.run(
        [sys.executable, "-m", "mailmoat", "config", "check", "/dev/zero"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == ["config error: /dev/zero: not a regular file"]


def test_config_file_size_is_bounded(tmp_path: Path) -> None:
    f = tmp_path / "big.toml"
    f.write_bytes(b"# " + b"x" * (1024 * 1024) + b"\n")
    code, out = _check(f)
    assert code == 2 and out.splitlines() == [f"config error: {f}: larger than 1048576 octets"]


def test_config_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    code, out = _check(fifo)
    assert code == 2 and "not a regular file" in out


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML"),
        (b'[server]\nhostname = "\xff"\n', "not UTF-8"),
    ],
    ids=["deeply nested", "not utf-8"],
)
def test_odd_files_give_one_line(tmp_path: Path, content: bytes, words: str) -> None:
    f = tmp_path / "odd.toml"
    f.write_bytes(content)
    code, out = _check(f)
    assert code == 2 and len(out.splitlines()) == 1 and words in out, out


def _tls_file(tmp_path: Path, cert: Path, key: Path | None, **extra: str) -> Path:
    f = tmp_path / "tls.toml"
    lines = ["[server]", f'tls_cert = "{cert}"']
    if key is not None:
        lines.append(f'tls_key = "{key}"')
    for k, v in extra.items():
        section, name = k.split(".")
        lines += [f"[{section}]", f'{name} = "{v}"']
    f.write_text("\n".join(lines) + "\n")
    return f


def test_named_files_must_exist_and_be_readable(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    f = tmp_path / "files.toml"
    f.write_text(
        f'[server]\ntls_cert = "{missing}"\ntls_key = "{tmp_path}"\n'
        f'[relay]\ntls_ca_file = "{missing}"\n'
        f'[directory]\nstatic_file = "{missing}"\n'
        f'[ldap]\nbind_password_file = "{missing}"\ntls_ca_file = "{tmp_path}"\n'
    )
    code, out = _check(f)
    assert code == 2
    lines = out.splitlines()
    for key in (
        "server.tls_cert",
        "server.tls_key",
        "relay.tls_ca_file",
        "directory.static_file",
        "ldap.bind_password_file",
        "ldap.tls_ca_file",
    ):
        assert sum(line.startswith(f"config error: {key}: ") for line in lines) == 1, (key, out)
    assert len(lines) == 6, out


def test_named_devices_are_refused_without_reading_them(tmp_path: Path) -> None:
    f = tmp_path / "dev.toml"
    f.write_text(
        '[server]\ntls_cert = "/dev/zero"\n[relay]\ntls_ca_file = "/dev/zero"\n'
        '[directory]\nstatic_file = "/dev/zero"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mailmoat", "config", "check", str(f)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"config error: {key}: /dev/zero is not a regular file"
        for key in ("server.tls_cert", "relay.tls_ca_file", "directory.static_file")
    ]


def test_certificate_and_key_must_match(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert_a, key_a = self_signed_cert(tmp_path / "a")
    _, key_b = self_signed_cert(tmp_path / "b")
    assert _check(_tls_file(tmp_path, cert_a, key_a)) == (0, f"{tmp_path / 'tls.toml'}: ok\n")
    code, out = _check(_tls_file(tmp_path, cert_a, key_b))
    assert code == 2
    assert out.startswith("config error: server.tls_cert: certificate and key do not match")
    assert len(out.splitlines()) == 1
    code, out = _check(_tls_file(tmp_path, key_a, cert_a))  # swapped
    assert out.splitlines() == [f"config error: server.tls_cert: no PEM certificate in {key_a}"]
    code, out = _check(_tls_file(tmp_path, cert_a, None))
    assert out.splitlines() == [f"config error: server.tls_cert: no PEM private key in {cert_a}"]
    code, out = _check(_tls_file(tmp_path, cert_a, key_a, **{"relay.tls_ca_file": str(key_a)}))
    assert code == 2 and out.startswith("config error: relay.tls_ca_file: no usable CA")


def test_serve_refuses_unsafe_settings_before_starting(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    cert_a, _ = self_signed_cert(tmp_path / "a")
    _, key_b = self_signed_cert(tmp_path / "b")
    f = _tls_file(tmp_path, cert_a, key_b)
    with f.open("a") as out:
        out.write('[domains]\nrelay_networks = ["0.0.0.0/0"]\n')
    proc = subprocess.run(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(f), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: domains.relay_networks: ")
    assert "Traceback" not in proc.stderr

    f = _tls_file(tmp_path, cert_a, key_b)
    proc = subprocess.run(
        [sys.executable, "-m", "mailmoat", "serve", "-c", str(f), "--listen", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("config error: server.tls_cert: certificate and key do not")
    assert "Traceback" not in proc.stderr


def test_a_pair_openssl_cannot_open_is_one_line(tmp_path: Path, monkeypatch) -> None:
    """An OSError that is not an SSLError (the file became unreadable after the readability
    check) is reported like any other problem, not as an AttributeError traceback."""
    cert, key = self_signed_cert(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(ssl.SSLContext, "load_cert_chain", refuse)
    code, out = _check(_tls_file(tmp_path, cert, key))
    assert code == 2
    assert out.splitlines() == [
        "config error: server.tls_cert: certificate and key cannot be used: Permission denied"
    ]


def test_default_hostname_is_checked_like_a_configured_one(monkeypatch) -> None:
    """The default comes from the system; workers receive it as a plain value, so a bad one
    must be refused where the admin sees it, not in every worker."""
    monkeypatch.setattr("socket.getfqdn", lambda: "my_host.lan")
    assert _problem({})[0] == "server.hostname"
    monkeypatch.setattr("socket.getfqdn", lambda: "mx.example.test")
    assert config.load(None, {}).server.hostname == "mx.example.test"
