"""The console as `mailmoat serve` runs it: beside a supervisor and its workers, in its own
thread; a ban made there reaches the supervisor at once, a message a worker took shows in the
recent transactions; and with no user the gateway does not start at all (one clear line)."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.support.console import Browserless, console_overrides
from tests.support.ports import free_port
from tests.support.raw_client import greeting
from tests.support.waiting import wait_until


def _config(tmp_path: Path, smtp: int, console: int, **more: str) -> Path:
    keys = console_overrides(tmp_path) | {"console.listen": f"127.0.0.1:{console}"} | more
    sections: dict[str, list[str]] = {}
    for key, value in keys.items():
        section, name = key.split(".")
        sections.setdefault(section, []).append(f'{name} = "{value}"')
    text = (
        f'[server]\nlisten = ["127.0.0.1:{smtp}"]\nhostname = "mx.example.test"\nworkers = 2\n'
        f'uvloop = false\n[domains]\nlocal = ["example.test"]\n'
        f'[maildir]\npath = "{tmp_path / "Maildir"}"\n[dns]\nchecks = false\n'
    )
    text += "".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items())
    path = tmp_path / "mailmoat.toml"
    path.write_text(text)
    return path


def _up(port: int) -> bool:
    try:
        return Browserless(port).request("GET", "/login")[0] == 200
    except OSError:
        return False


def test_serve_runs_the_console_beside_its_workers(tmp_path: Path) -> None:
    smtp, console = free_port(), free_port()
    config = _config(tmp_path, smtp, console)
    proc = subprocess.Popen([sys.executable, "-m", "mailmoat", "serve", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_until(lambda: _up(console) or proc.poll() is not None, "the console answers")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        client = Browserless(console)
        assert client.login() == 303
        token = client.csrf()
        form = {"address": "127.0.0.66", "duration": "600", "csrf_token": token}
        assert client.request("POST", "/bans", form)[0] == 303
        assert greeting(smtp, "127.0.0.66").startswith(b"421 4.7.0")
        with smtplib.SMTP("127.0.0.1", smtp, timeout=20) as c:
            c.sendmail("erin@sender.test", ["bob@example.test"], b"Subject: x\r\n\r\nx\r\n")
        assert "erin@sender.test" in client.request("GET", "/transactions")[2]
        status, _, page = client.request("GET", "/")
        assert status == 200 and page.count("<td>worker</td>") == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0


def test_serve_refuses_to_start_a_console_without_a_user(tmp_path: Path) -> None:
    users = tmp_path / "empty-users"
    users.write_text("")
    config = _config(tmp_path, free_port(), free_port(), **{"console.users_file": str(users)})
    done = subprocess.run([sys.executable, "-m", "mailmoat", "serve", "-c", str(config)],
                          capture_output=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.decode().startswith("config error: console.users_file: ")
    assert "names no user" in done.stderr.decode()
