"""A web console (issue 14) on a running test gateway, and a plain HTTP client for it that keeps
its cookie like a browser would (for the auth/CSRF tests that need no browser)."""

from __future__ import annotations

import asyncio
import http.client
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from mailmoat.console import users
from mailmoat.console.server import COOKIE, Console, ConsoleThread
from mailmoat.console.view import GatewayView
from tests.support.gateway import RunningGateway, running_gateway

USER, PASSWORD = "admin", "correct horse battery staple"


def console_overrides(tmp_path: Path) -> dict[str, Any]:
    """Settings for a console on a free loopback port with one user (USER, PASSWORD)."""
    users_file = tmp_path / "console-users"
    if not users_file.exists():
        users.add(users_file, USER, PASSWORD)
    return {
        "console.listen": "127.0.0.1:0",
        "console.users_file": str(users_file),
        "console.audit_log": str(tmp_path / "audit.jsonl"),
    }


@contextmanager
def running_console(tmp_path: Path, **overrides: Any) -> Iterator[tuple[RunningGateway, int]]:
    """A gateway and its console: (gateway, console port)."""
    settings = console_overrides(tmp_path) | overrides
    with running_gateway(tmp_path / "md", **settings) as gw:
        gateway = gw.gateway
        assert gateway is not None

        async def view() -> GatewayView:
            return GatewayView(gateway, asyncio.get_running_loop())

        thread = ConsoleThread(Console(gw.settings, gw.run(view())))
        port = thread.start()[1]
        try:
            yield gw, port
        finally:
            thread.stop()


class Browserless:
    """Requests to the console that carry its cookie and an Origin, as a browser would."""

    def __init__(self, port: int, tls: ssl.SSLContext | None = None, source: str = "") -> None:
        self.port = port
        self.tls = tls
        self.source = (source, 0) if source else None
        """The loopback address to connect from (127.0.0.0/8), or the system's choice."""
        self.origin = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        self.cookie = ""
        self.last_cookie = ""
        """The last Set-Cookie field heard, as sent."""

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], str]:
        conn = (
            http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=20, source_address=self.source, context=self.tls
            )
            if self.tls
            else http.client.HTTPConnection(
                "127.0.0.1", self.port, timeout=20, source_address=self.source
            )
        )
        fields = {"Origin": self.origin} if method == "POST" else {}
        if self.cookie:
            fields["Cookie"] = f"{COOKIE}={self.cookie}"
        body = urlencode(form or {})
        if method == "POST":
            fields["Content-Type"] = "application/x-www-form-urlencoded"
        fields.update({k.replace("_", "-"): v for k, v in headers.items()})
        try:
            conn.request(method, path, body=body if method == "POST" else None, headers=fields)
            response = conn.getresponse()
            text = response.read().decode()
            found = {k.lower(): v for k, v in response.getheaders()}
        finally:
            conn.close()
        self.last_cookie = found.get("set-cookie", "")
        if "set-cookie" in found:
            jar: SimpleCookie = SimpleCookie()
            jar.load(found["set-cookie"])
            self.cookie = jar[COOKIE].value
        return response.status, found, text

    def login(self, user: str = USER, password: str = PASSWORD) -> int:
        return self.request("POST", "/login", {"username": user, "password": password})[0]

    def csrf(self, path: str = "/bans") -> str:
        status, _, page = self.request("GET", path)
        assert status == 200, page
        found = re.search(r'name=csrf_token value="([^"]+)"', page)
        assert found, page
        return found.group(1)
