"""The `mailmoat` command: config check reports KEY: REASON, config defaults lists everything,
and serve's flags override the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

from mailmoat import config
from mailmoat.cli import main


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    f = tmp_path / "ok.toml"
    f.write_text('[domains]\nlocal = ["example.org"]\n[relay]\ndownstream = "10.0.0.5:25"\n')
    result = CliRunner().invoke(main, ["config", "check", str(f)])
    assert result.exit_code == 0 and "ok" in result.output


def test_config_check_names_each_bad_key_and_why(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        "[relay]\npool_size = 0\ndownstream = 'nohost'\nbogus = 1\n"
        "[smtp]\nmax_command_line = 100\n[domains]\nrelay_networks = ['10.0.0.0/33']\n"
    )
    result = CliRunner().invoke(main, ["config", "check", str(f)])
    assert result.exit_code == 2
    lines = result.output.splitlines()
    for key in (
        "relay.pool_size",
        "relay.downstream",
        "relay.bogus",
        "smtp.max_command_line",
        "domains.relay_networks",
    ):
        assert any(line.startswith(f"config error: {key}: ") for line in lines), key


def test_config_check_reports_broken_toml(tmp_path: Path) -> None:
    f = tmp_path / "broken.toml"
    f.write_text("[relay\n")
    result = CliRunner().invoke(main, ["config", "check", str(f)])
    assert result.exit_code == 2 and "not valid TOML" in result.output


def test_defaults_list_every_setting_with_a_description() -> None:
    result = CliRunner().invoke(main, ["config", "defaults"])
    rows = config.describe_defaults()
    assert len(rows) > 30
    for key, _default, doc in rows:
        assert doc, f"{key} has no documentation"
        assert f"{key.split('.', 1)[1]} = " in result.output


def test_flags_override_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[domains]\nlocal = ["from-file.test"]\n[relay]\npool_size = 3\n')
    s = config.load(f, {"domains.local": ["from-flag.test"]})
    assert s.domains.local == ["from-flag.test"]
    assert s.relay.pool_size == 3


def test_defaults_are_a_toml_file_that_loads_back_as_the_defaults(tmp_path: Path) -> None:
    """`config defaults > mailmoat.toml` is a starting configuration: valid TOML whose values
    are the defaults; what TOML cannot write (unset, this host's name) is commented out."""
    listing = CliRunner().invoke(main, ["config", "defaults"]).output
    data = tomllib.loads(listing)
    assert set(data) == set(config.Settings.model_fields)
    written = {f"{section}.{key}" for section, table in data.items() for key in table}
    assert written == {k for k, shown, _ in config.describe_defaults() if not shown.startswith("(")}
    f = tmp_path / "defaults.toml"
    f.write_text(listing)
    assert config.load(f) == config.load(None)


def test_a_default_string_keeps_quotes_backslashes_and_non_ascii() -> None:
    from mailmoat.config.render import toml_value

    text = 'say "hi" \\ (|(mail=%s)) ü'
    assert tomllib.loads(f"k = {toml_value(text)}")["k"] == text
    table = {"example.org": "static", "a b": "none"}
    assert tomllib.loads(f"k = {toml_value(table)}")["k"] == table
