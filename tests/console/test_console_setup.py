"""Setting the console up: `mailmoat console adduser`, the users file, and the settings checks
(no default user, TLS for anything but loopback)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat import config
from mailmoat.cli import main
from mailmoat.config_checks import file_problems
from mailmoat.console import users


def _load(tmp_path: Path, **console: object) -> None:
    config.load(
        None, {"maildir.path": str(tmp_path), **{f"console.{k}": v for k, v in console.items()}}
    )


def test_adduser_writes_an_argon2id_hash_read_from_stdin(tmp_path: Path) -> None:
    path = tmp_path / "users"
    done = CliRunner().invoke(
        main, ["console", "adduser", "alice", "--file", str(path)], input="s3cret pass\n"
    )
    assert done.exit_code == 0, done.output
    assert path.stat().st_mode & 0o777 == 0o600
    line = path.read_text().strip()
    assert line.startswith("alice:$argon2id$") and "s3cret" not in line
    table = users.load(path)
    assert users.verify(table, "alice", "s3cret pass")
    assert not users.verify(table, "alice", "s3cret pass\n")
    assert not users.verify(table, "bob", "s3cret pass")
    # the same name again changes its password; it is never listed twice
    CliRunner().invoke(main, ["console", "adduser", "alice", "--file", str(path)], input="new\n")
    assert len(path.read_text().splitlines()) == 1 and users.verify(
        users.load(path), "alice", "new"
    )


@pytest.mark.parametrize("name, given", [("bad:name", "pw\n"), ("alice", "\n"), ("", "pw\n")])
def test_adduser_refuses_bad_input_in_one_line(tmp_path: Path, name: str, given: str) -> None:
    done = CliRunner().invoke(
        main, ["console", "adduser", name, "--file", str(tmp_path / "u")], input=given
    )
    assert done.exit_code == 2 and done.output.startswith(f"cannot add {name}: ")
    assert not (tmp_path / "u").exists()


@pytest.mark.parametrize(
    "text, why",
    [("", "names no user"), ("# only a comment\n", "names no user"),
     ("alice:plaintext\n", "line 1: expected NAME:ARGON2ID-HASH"),
     ("alice:$2b$12$bcrypt\n", "line 1: expected NAME:ARGON2ID-HASH")],
)  # fmt: skip
def test_no_usable_user_refuses_the_config(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "users"
    path.write_text(text)
    settings = config.load(None, {"maildir.path": str(tmp_path), "console.listen": "127.0.0.1:8026",
                                  "console.users_file": str(path)})  # fmt: skip
    problems = dict(file_problems(settings))
    assert why in problems["console.users_file"]


def test_the_settings_refuse_an_open_console_without_tls_or_users(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match=r"needs console\.users_file"):
        _load(tmp_path, listen="127.0.0.1:8026")
    with pytest.raises(
        config.ConfigError, match=r"non-loopback console\.listen needs console\.tls"
    ):
        _load(tmp_path, listen="0.0.0.0:8026", users_file="/x")
    with pytest.raises(config.ConfigError, match="go together"):
        _load(tmp_path, tls_cert="/x")
    _load(tmp_path, listen="0.0.0.0:8443", users_file="/x", tls_cert="/c", tls_key="/k")
    assert config.load(None, {}).console.listen == ""  # off unless asked for


@pytest.mark.parametrize("where", ["missing/audit.jsonl", "a-file/audit.jsonl", "."])
def test_config_check_refuses_an_audit_log_it_cannot_append_to(tmp_path: Path, where: str) -> None:
    users.add(tmp_path / "users", "alice", "s3cret pass")
    (tmp_path / "a-file").write_text("")
    toml = tmp_path / "gw.toml"

    def check(audit: Path) -> tuple[int, str]:
        toml.write_text(
            f'[maildir]\npath = "{tmp_path}"\n[console]\nlisten = "127.0.0.1:8026"\n'
            f'users_file = "{tmp_path / "users"}"\naudit_log = "{audit}"\n'
        )
        done = CliRunner().invoke(main, ["config", "check", str(toml)])
        return done.exit_code, done.output

    code, output = check(tmp_path / where)
    assert code == 2
    assert output.count("\n") == 1 and "console.audit_log" in output, output
    (tmp_path / "ok").mkdir()
    assert check(tmp_path / "ok" / "audit.jsonl")[0] == 0
