"""What contrib/ ships works: the systemd unit passes `systemd-analyze verify` (with its
commands pointed at this installation) and rates an exposure of at most 3.0 in
`systemd-analyze security`; the example configuration passes `mailmoat config check`."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli import main

CONTRIB = Path(__file__).resolve().parent.parent / "contrib"
UNIT = CONTRIB / "mailmoat.service"

needs_systemd = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)


def _local_unit(tmp_path: Path) -> Path:
    """The unit with /usr/local/bin/mailmoat replaced by this installation's command."""
    command = Path(sys.executable).parent / "mailmoat"
    assert command.exists(), command
    text = UNIT.read_text().replace("/usr/local/bin/mailmoat", str(command))
    unit = tmp_path / "mailmoat.service"
    unit.write_text(text)
    return unit


@needs_systemd
def test_unit_verifies(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", str(_local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "mailmoat.service" not in done.stderr, done.stderr


@needs_systemd
def test_unit_exposure_at_most_3(tmp_path: Path) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(_local_unit(tmp_path))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for mailmoat\.service: ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout + done.stderr
    assert float(found.group(1)) <= 3.0


def test_unit_is_notify_with_reload_and_only_the_bind_capability() -> None:
    lines = {line.strip() for line in UNIT.read_text().splitlines()}
    assert "Type=notify" in lines
    assert "ExecReload=/bin/kill -HUP $MAINPID" in lines
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines


def test_example_config_checks_ok() -> None:
    result = CliRunner().invoke(main, ["config", "check", str(CONTRIB / "mailmoat.toml")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(": ok")
