"""The admin endpoint (`admin.listen`, off by default): a small HTTP/1.0 server for the
administrator's tools, on a loopback address, a unix socket, or (with `admin.token_file`) any
address.

- ``GET /stats``: the counters as one JSON document (what `mailmoat stats` reads), summed
  over the supervisor and its workers;
- ``GET /metrics``: the same in the Prometheus text format (prometheus_client renders it);
- ``GET /healthz``: 200 while the gateway listens and can deliver (the downstream accepts a
  connection, or the Maildir is writable), else 503; the body says which part failed;
- ``GET /bans`` lists the running bans (JSON); ``POST /bans?target=ADDRESS|NETWORK&seconds=N``
  bans, ``DELETE /bans?target=...`` lifts every ban of it (`mailmoat ban`, `unban`, `bans`).

Everything is bounded (invariant 3): at most `MAX_CLIENTS` connections at once plus
`HEALTH_SLOTS` kept for /healthz, a request head of at most `MAX_REQUEST` octets read within
`HEAD_TIMEOUT` seconds, no request body, one response, then the connection closes. A
connection past the bound gets 503 at once (never a silent close). With a token, every request
must carry ``Authorization: Bearer TOKEN`` (compared in constant time), or it gets 401. A unix
socket is made readable by its owner only.

A web browser on the administrator's machine can reach a loopback listener too, so (403):
a Host that is not the listener's own (its address, localhost, or the name in admin.listen)
is refused, which stops DNS rebinding; so is an Origin other than the listener's own, and a
request a browser marks cross-site (Sec-Fetch-Site). POST and DELETE also need the header
``X-Mailmoat-Admin: 1``, which no page can add to a cross-site request without a CORS
preflight (which this server never grants).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import os
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from mailmoat.config import split_endpoint
from mailmoat.limits import ADMIN_CLIENT_TIMEOUT, MANUAL_BAN_TIME
from mailmoat.limits import ADMIN_HEAD_TIMEOUT as HEAD_TIMEOUT
from mailmoat.limits import ADMIN_HEALTH_SLOTS as HEALTH_SLOTS
from mailmoat.limits import ADMIN_MAX_CLIENTS as MAX_CLIENTS
from mailmoat.limits import ADMIN_MAX_REQUEST as MAX_REQUEST
from mailmoat.limits import ADMIN_REQUEST_TIMEOUT as REQUEST_TIMEOUT

STATE_HEADER = "x-mailmoat-admin"
"""Header POST and DELETE must carry: a browser cannot add it cross-site without preflight."""

Snapshot = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
Health = Callable[[], Awaitable[dict[str, str]]]
"""What is wrong, by part ({} when healthy)."""

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class AdminServer:
    def __init__(
        self,
        listen: str,
        snapshot: Snapshot,
        health: Health | None = None,
        token: str = "",
        bans: Any = None,
    ) -> None:
        """`snapshot` makes the stats document (a supervisor asks its workers for theirs);
        `health` says what keeps the gateway from serving; `token`, when set, is required."""
        self.listen = listen
        self.snapshot = snapshot
        self.health = health
        self.token = token.encode()
        self.bans = bans
        """policy.bans.BanList (ban_manually, unban, listed), or None: no /bans."""
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | str | None = None
        self._busy = 0
        self._hosts: frozenset[str] = frozenset()
        """Names a Host field may give (empty for a unix socket: any, no browser gets there)."""

    async def start(self) -> None:
        if self.listen.startswith("/"):
            path = Path(self.listen)
            with contextlib.suppress(FileNotFoundError):
                if path.is_socket():
                    path.unlink()
            old = os.umask(0o177)
            try:
                self.server = await asyncio.start_unix_server(self._serve, path, limit=MAX_REQUEST)
            finally:
                os.umask(old)
            self.address = str(path)
        else:
            host, port = split_endpoint(self.listen)
            self.server = await asyncio.start_server(
                self._serve, host, port, reuse_address=True, limit=MAX_REQUEST
            )
            sock: socket.socket = self.server.sockets[0]
            self.address = sock.getsockname()[:2]
            names = {host.lower(), str(self.address[0]).lower(), "localhost"}
            self._hosts = frozenset(n for n in names if n)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One request. Past MAX_CLIENTS only /healthz is served (HEALTH_SLOTS of them); past
        those every connection gets 503 without a byte read."""
        busy = self._busy
        self._busy += 1
        try:
            if busy >= MAX_CLIENTS + HEALTH_SLOTS:
                answer = 503, "text/plain", b"busy: too many admin connections\n"
            else:
                answer = await self._read_and_answer(reader, health_only=busy >= MAX_CLIENTS)
            status, ctype, body = answer
            reason = _REASONS.get(status, "")
            writer.write(
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n".encode()
                + (b'WWW-Authenticate: Bearer realm="mailmoat"\r\n' if status == 401 else b"")
                + b"\r\n"
                + body
            )
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT)
        except (OSError, TimeoutError):
            pass
        finally:
            self._busy -= 1
            writer.close()

    async def _read_and_answer(
        self, reader: asyncio.StreamReader, health_only: bool
    ) -> tuple[int, str, bytes]:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT
            )  # the stream's limit (MAX_REQUEST) bounds it
        except TimeoutError:
            return 408, "text/plain", b"request head not sent in time\n"
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return 400, "text/plain", b"bad request\n"
        if health_only and not head.startswith((b"GET /healthz ", b"HEAD /healthz ")):
            return 503, "text/plain", b"busy: too many admin connections\n"
        return await self._answer(head)

    def _refused(self, method: str, fields: dict[str, str]) -> bytes | None:
        """Why a request a browser may have sent cross-site is refused (403), or None."""
        if self._hosts and not self.token:  # a token is what a rebinding page cannot know
            host = fields.get("host")
            if host is not None and _host_name(host) not in self._hosts:
                return b"forbidden: Host is not this admin endpoint\n"
        origin = fields.get("origin")
        if origin is not None and not self._own_origin(origin):
            return b"forbidden: cross-origin request\n"
        if fields.get("sec-fetch-site", "").lower() in ("cross-site", "same-site"):
            return b"forbidden: cross-site request\n"
        if method not in ("GET", "HEAD") and fields.get(STATE_HEADER) != "1":
            return f"forbidden: {method} needs the header X-Mailmoat-Admin: 1\n".encode()
        return None

    def _own_origin(self, origin: str) -> bool:
        if not isinstance(self.address, tuple):
            return False  # no page is served from a unix socket
        try:
            url = urlsplit(origin.strip())
            port = url.port
        except ValueError:
            return False
        return (
            url.scheme.lower() == "http"
            and (url.hostname or "") in self._hosts
            and port == self.address[1]
        )

    async def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return 400, "text/plain", b"bad request\n"
        method, target, _ = parts
        fields: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                fields[name.strip().lower()] = value.strip()
        refused = self._refused(method, fields)
        if refused is not None:
            return 403, "text/plain", refused
        if self.token and not _bearer_ok(fields.get("authorization", ""), self.token):
            return 401, "text/plain", b"a bearer token is required\n"
        path, _, query = target.partition("?")
        if path == "/bans" and self.bans is not None:
            return await self._bans(method, parse_qs(query))
        routes = {"/stats": self._stats, "/metrics": self._metrics, "/healthz": self._health}
        if path not in routes:
            return 404, "text/plain", b"not found: try /stats, /metrics, /healthz or /bans\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET\n"
        try:
            return await routes[path]()
        except TimeoutError:
            return 503, "text/plain", b"timed out\n"

    async def _bans(self, method: str, query: dict[str, list[str]]) -> tuple[int, str, bytes]:
        target = query.get("target", [""])[0]
        try:
            if method == "GET":
                body = json.dumps(await self.bans.listed())
            elif method == "POST":
                text = query.get("seconds", [str(MANUAL_BAN_TIME)])[0]
                try:
                    seconds = float(text)
                except ValueError:
                    raise ValueError(f"seconds must be a number, not {text!r}") from None
                body = json.dumps(await self.bans.ban_manually(target, seconds))
            elif method == "DELETE":
                if not await self.bans.unban(target):
                    return 404, "text/plain", f"no ban of {target}\n".encode()
                body = json.dumps({"target": target, "lifted": True})
            else:
                return 405, "text/plain", b"GET, POST or DELETE\n"
        except ValueError as err:
            return 400, "text/plain", f"{err}\n".encode()
        return 200, "application/json", body.encode() + b"\n"

    async def _document(self) -> dict[str, Any]:
        doc = self.snapshot()
        if inspect.isawaitable(doc):
            doc = await asyncio.wait_for(doc, REQUEST_TIMEOUT)
        return doc

    async def _stats(self) -> tuple[int, str, bytes]:
        return 200, "application/json", json.dumps(await self._document()).encode() + b"\n"

    async def _metrics(self) -> tuple[int, str, bytes]:
        from mailmoat.server.metrics import CONTENT_TYPE, render

        return 200, CONTENT_TYPE, render(await self._document())

    async def _health(self) -> tuple[int, str, bytes]:
        problems = await asyncio.wait_for(self.health(), REQUEST_TIMEOUT) if self.health else {}
        if problems:
            text = "".join(f"{part}: {why}\n" for part, why in sorted(problems.items()))
            return 503, "text/plain", text.encode()
        return 200, "text/plain", b"ok\n"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        if isinstance(self.address, str):
            with contextlib.suppress(OSError):
                Path(self.address).unlink()


def _host_name(value: str) -> str:
    """The name in a Host field or an Origin's authority, without its port or brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")


def _bearer_ok(header: str, token: bytes) -> bool:
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)


def request(
    listen: str,
    path: str,
    timeout: float = ADMIN_CLIENT_TIMEOUT,
    token: str = "",
    method: str = "GET",
) -> tuple[int, bytes]:
    """One blocking request to a running mailmoat's admin endpoint: (status, body). For the
    CLI."""
    if listen.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        sock.connect(listen)
    else:
        sock = socket.create_connection(split_endpoint(listen), timeout=timeout)
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    if method not in ("GET", "HEAD"):
        auth += "X-Mailmoat-Admin: 1\r\n"
    host = "localhost" if listen.startswith("/") else listen
    with sock:
        sock.sendall(f"{method} {path} HTTP/1.0\r\nHost: {host}\r\n{auth}\r\n".encode())
        chunks = []
        total = 0
        while chunk := sock.recv(65536):
            chunks.append(chunk)
            total += len(chunk)
            if total > 16 * 1024 * 1024:
                raise ValueError("admin response too large")
    response = b"".join(chunks)
    head, sep, body = response.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split(b" ")
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError("not an HTTP response")
    return int(status_line[1]), body


def fetch(listen: str, timeout: float = ADMIN_CLIENT_TIMEOUT, token: str = "") -> dict[str, object]:
    """Read the stats document from a running mailmoat's admin endpoint (blocking)."""
    status, body = request(listen, "/stats", timeout, token)
    if status != 200:
        raise ValueError(f"admin endpoint answered {status}: {body[:200].decode(errors='replace')}")
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("stats document is not an object")
    return doc


def bans_path(target: str = "", seconds: float | None = None) -> str:
    """The /bans request path for `target` (and `seconds`), quoted."""
    query = f"target={quote(target, safe='')}" if target else ""
    if seconds is not None:
        query += f"&seconds={quote(f'{seconds:g}', safe='')}"
    return "/bans" + (f"?{query}" if query else "")
