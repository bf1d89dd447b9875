"""README.md stays true: it opens with the two set-up commands, CI runs the test one, and the
settings list is the one `mailmoat config defaults` prints."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from mailmoat.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _first_code_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert block is not None and text.index(block.group(0)) < text.index("\n## ")
    return [line.split("#")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one() -> None:
    commands = _first_code_block()
    assert commands == ["./scripts/quickstart", "./scripts/test"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is not executable"
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_readme_lists_every_setting_as_the_cli_prints_it() -> None:
    listing = CliRunner().invoke(main, ["config", "defaults"]).output
    text = (ROOT / "README.md").read_text()
    block = re.search(
        r"<!-- settings:start -->\n```text\n(.*?)```\n<!-- settings:end -->", text, re.S
    )
    assert block is not None
    assert block.group(1) == listing, "README settings are stale: run scripts/sync-readme-settings"
