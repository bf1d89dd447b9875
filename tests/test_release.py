"""The release: `python -m build` makes an sdist and a wheel that carry the LICENSE and the
metadata, the wheel installs into a clean venv with its dependencies, and the installed
`mailmoat` runs: `--version` prints the one version, and `serve` delivers a message."""

from __future__ import annotations

import email
import os
import re
import signal
import smtplib
import subprocess
import sys
import tarfile
import time
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def test_sdist_and_wheel_carry_license_and_metadata(dist: Path) -> None:
    wheel = dist / f"mailmoat-{VERSION}-py3-none-any.whl"
    sdist = dist / f"mailmoat-{VERSION}.tar.gz"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = z.read(f"mailmoat-{VERSION}.dist-info/METADATA").decode()
    assert f"mailmoat-{VERSION}.dist-info/licenses/LICENSE" in names
    assert "mailmoat/py.typed" in names
    assert "License-Expression: MIT" in meta
    assert 'Requires-Dist: uvloop>=0.19; sys_platform == "linux"' in meta
    assert 'Requires-Dist: ldap3>=2.9; extra == "ldap"' in meta
    with tarfile.open(sdist) as t:
        assert f"mailmoat-{VERSION}/LICENSE" in t.getnames()


def test_wheel_installs_into_a_clean_venv_and_serves(dist: Path, tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    wheel = dist / f"mailmoat-{VERSION}-py3-none-any.whl"
    # Nothing of this checkout or its venv may leak in (a PYTHONPATH to src/ would make pip
    # think mailmoat is installed already).
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # --no-compile: byte-compiling every dependency's files proves nothing here (Python
    # compiles what it imports) and costs seconds of CPU.
    pip = [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-compile"]
    done = subprocess.run(
        [*pip, str(wheel)],
        capture_output=True,
        text=True,
        env=clean_env,
        cwd=tmp_path,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    command = env_dir / "bin" / "mailmoat"
    shown = subprocess.run(
        [str(command), "--version"], capture_output=True, text=True, env=clean_env, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"\b{re.escape(VERSION)}\b", shown.stdout)
    # The installed code, not this checkout's, is what runs.
    where = subprocess.run(
        [str(py), "-c", "import mailmoat; print(mailmoat.__file__)"],
        capture_output=True, text=True, env=clean_env, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(env_dir)), where.stdout

    port = free_port()
    maildir = tmp_path / "Maildir"
    proc = subprocess.Popen(
        [str(command), "serve", "--listen", f"127.0.0.1:{port}", "--domain", "example.test",
         "--maildir", str(maildir), "--hostname", "mx.example.test"],
        env=clean_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = smtplib.SMTP("127.0.0.1", port, timeout=10)
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        with client:
            refused = client.sendmail(
                "bob@sender.test",
                ["alice@example.test"],
                b"From: <bob@sender.test>\r\nSubject: release\r\n\r\nhello\r\n",
            )
        assert refused == {}
        files = list((maildir / "new").iterdir())
        assert len(files) == 1
        assert email.message_from_bytes(files[0].read_bytes())["Subject"] == "release"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
