"""The console's HTTP(S) server, in its own thread with its own event loop (`ConsoleThread`):
a page that takes long, or many of them, never delays an SMTP session.

Every page but /login needs a session cookie (HttpOnly, SameSite=Strict, Secure over TLS).
Every POST must come from the console's own origin (Origin equal to this listener's scheme and
Host) and, once logged in, carry the session's CSRF token: otherwise 403. Failed logins are
counted per network and in all (429 past the limit; auth.LoginThrottle). Every login and
action goes to the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from mailmoat import logs
from mailmoat.config import Settings, split_endpoint
from mailmoat.config.base import loopback_host
from mailmoat.console import pages, users
from mailmoat.console.audit import Audit, AuditFailed
from mailmoat.console.auth import Login, LoginThrottle, Sessions, csrf_ok
from mailmoat.console.history import History
from mailmoat.console.view import GatewayView
from mailmoat.limits import (
    CONSOLE_LOGIN_VERIFIERS,
    CONSOLE_MAX_BODY,
    CONSOLE_MAX_CLIENTS,
    CONSOLE_MAX_HEAD,
    CONSOLE_READ_TIMEOUT,
    CONSOLE_SAMPLE_EVERY,
    MANUAL_BAN_TIME,
)

COOKIE = "mailmoat_console"
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
_REASONS = {200: "OK", 303: "See Other", 400: "Bad Request", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 413: "Content Too Large",
            421: "Misdirected Request", 429: "Too Many Requests",
            503: "Service Unavailable"}  # fmt: skip


class Request:
    def __init__(self, method: str, path: str, query: dict[str, str], fields: dict[str, str],
                 form: dict[str, str], peer: str) -> None:  # fmt: skip
        self.method, self.path, self.query = method, path, query
        self.fields, self.form, self.peer = fields, form, peer

    @property
    def sid(self) -> str | None:
        cookie: SimpleCookie = SimpleCookie()
        with contextlib.suppress(Exception):
            cookie.load(self.fields.get("cookie", ""))
        morsel = cookie.get(COOKIE)
        return morsel.value if morsel else None


Response = tuple[int, dict[str, str], bytes]


def _html(body: bytes, status: int) -> Response:
    return status, {"Content-Type": "text/html; charset=utf-8"}, body


def _see(location: str, **extra: str) -> Response:
    return 303, {"Location": location, **extra}, b""


class Console:
    def __init__(self, settings: Settings, view: GatewayView) -> None:
        """UsersError (one line) when the users file names no usable user."""
        self.settings = settings.console
        self.view = view
        assert self.settings.users_file is not None  # the settings check requires it
        self.users = users.load(self.settings.users_file)
        self.sessions = Sessions(self.settings.session_time)
        self.throttle = LoginThrottle()
        self._verifier = ThreadPoolExecutor(CONSOLE_LOGIN_VERIFIERS, "console-login")
        self.audit = Audit(self.settings.audit_log)
        self.history = History()
        self.server: asyncio.Server | None = None
        self.address: tuple[str, int] | None = None
        self._busy = 0
        self._sampler: asyncio.Task[None] | None = None
        self._clients: set[asyncio.Task[Any]] = set()
        self._reading: dict[asyncio.Task[Any], None] = {}
        """Connections still sending their request, oldest first: the ones a newcomer evicts."""

    async def start(self) -> None:
        host, port = split_endpoint(self.settings.listen)
        context = None
        if self.settings.tls_cert is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.settings.tls_cert, self.settings.tls_key)
        self.server = await asyncio.start_server(
            self._serve,
            host,
            port,
            ssl=context,
            ssl_handshake_timeout=CONSOLE_READ_TIMEOUT if context else None,
            limit=CONSOLE_MAX_HEAD,
            reuse_address=True,
        )
        self.address = self.server.sockets[0].getsockname()[:2]
        self._sampler = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.history.add(time.time(), await self.view.snapshot())
            await asyncio.sleep(CONSOLE_SAMPLE_EVERY)

    async def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        if self.server is not None:
            self.server.close()
        for task in list(self._clients):
            task.cancel()
        await asyncio.gather(*self._clients, return_exceptions=True)
        if self.server is not None:
            with contextlib.suppress(Exception):
                await self.server.wait_closed()
        self._verifier.shutdown(wait=False, cancel_futures=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._busy += 1
        task = asyncio.current_task()
        if task is not None:
            self._clients.add(task)
        try:
            if self._busy > CONSOLE_MAX_CLIENTS and not self._evict_a_slow_sender():
                answer: Response = 503, {"Content-Type": "text/plain"}, b"busy\n"
            else:
                peer = writer.get_extra_info("peername")
                answer = await self._read(reader, str(peer[0]) if peer else "?")
            status, headers, body = answer
            head = f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\n"
            for name, value in {**self._security(), **headers}.items():
                head += f"{name}: {value}\r\n"
            head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            writer.write(head.encode("latin-1") + body)
            await asyncio.wait_for(writer.drain(), CONSOLE_READ_TIMEOUT)
        except (OSError, TimeoutError, ssl.SSLError):
            pass
        finally:
            self._busy -= 1
            if task is not None:
                self._clients.discard(task)
            writer.close()

    def _evict_a_slow_sender(self) -> bool:
        """Make room by closing the connection that has been sending its request longest
        (slowloris: a browser sends its request at once, so idle or trickling connections
        cannot keep an administrator out); False when every slot is serving a request."""
        for task in self._reading:
            if task is not asyncio.current_task():
                del self._reading[task]
                task.cancel()
                return True
        return False

    def _security(self) -> dict[str, str]:
        return {
            "Content-Security-Policy": CSP,
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        }

    async def _read(self, reader: asyncio.StreamReader, peer: str) -> Response:
        text = {"Content-Type": "text/plain"}
        task = asyncio.current_task()
        if task is not None:
            self._reading[task] = None
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONSOLE_READ_TIMEOUT)
            lines = head.decode("latin-1").split("\r\n")
            method, target, version = lines[0].split(" ")
            if not version.startswith("HTTP/1."):
                raise ValueError
            fields: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    fields[name.strip().lower()] = value.strip()
            length = int(fields.get("content-length", "0"))
            if not 0 <= length <= CONSOLE_MAX_BODY:
                return 413, text, b"request body too large\n"
            raw = await asyncio.wait_for(reader.readexactly(length), CONSOLE_READ_TIMEOUT)
        except TimeoutError:
            return 400, text, b"request not sent in time\n"
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            return 400, text, b"bad request\n"
        finally:
            if task is not None:
                self._reading.pop(task, None)
        if not self._our_host(fields.get("host", "")):
            return 421, text, b"this console is not reached by that name (Host)\n"
        path, _, query = target.partition("?")
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        qs = {k: v[0] for k, v in parse_qs(query).items()}
        request = Request(method, path, qs, fields, form, peer)
        try:
            return await self._route(request)
        except TimeoutError:
            return 503, text, b"the gateway did not answer in time\n"
        except AuditFailed:
            return 503, text, b"the audit log cannot be written: nothing was done\n"

    def _our_host(self, host: str) -> bool:
        """The Host names this console: its listen address, console.hostname, or (on loopback)
        localhost or a loopback address. A name an attacker controls, pointed at this address
        (DNS rebinding), does not. On loopback any port goes (`ssh -L` may forward another)."""
        try:
            url = urlsplit(f"//{host}")
            name, port = (url.hostname or "").lower(), url.port
        except ValueError:
            return False
        listen, listen_port = split_endpoint(self.settings.listen)
        loopback = loopback_host(listen)
        bound = self.address[1] if self.address else listen_port
        if not loopback and port not in (None, bound):
            return False
        if name and name in (listen.lower(), self.settings.hostname):
            return True
        if loopback:
            return name == "localhost" or loopback_host(name)
        # on every address (0.0.0.0, ::): any address literal, which no DNS answer can rebind
        return _unspecified(listen) and _address(name)

    def _same_origin(self, request: Request) -> bool:
        """A POST's Origin must be this console's own (scheme and the Host it was sent to)."""
        origin, host = request.fields.get("origin", ""), request.fields.get("host", "")
        scheme = "https" if self.settings.tls else "http"
        try:
            url = urlsplit(origin)
        except ValueError:
            return False
        return bool(host) and url.scheme == scheme and url.netloc.lower() == host.lower()

    async def _route(self, request: Request) -> Response:
        if request.path == "/console.css":
            return 200, {"Content-Type": "text/css"}, pages.CSS
        if request.method == "POST" and not self._same_origin(request):
            self.audit.write("-", request.peer, f"POST {request.path}", "refused: cross-origin")
            return 403, {"Content-Type": "text/plain"}, b"forbidden: cross-origin request\n"
        if request.path == "/login":
            return await self._login(request)
        login = self.sessions.get(request.sid)
        if login is None:
            return _see("/login")
        if request.method == "POST":
            if not csrf_ok(login, request.form.get("csrf_token", "")):
                self.audit.write(login.user, request.peer, f"POST {request.path}",
                                 "refused: bad CSRF token")  # fmt: skip
                return 403, {"Content-Type": "text/plain"}, b"forbidden: bad CSRF token\n"
            posts: dict[str, Callable[[Request, Login], Awaitable[Response]]] = {
                "/logout": self._logout,
                "/bans": self._ban,
                "/bans/remove": self._unban,
            }
            if request.path not in posts:
                return 404, {"Content-Type": "text/plain"}, b"not found\n"
            return await posts[request.path](request, login)
        if request.method != "GET":
            return 405, {"Content-Type": "text/plain"}, b"GET or POST\n"
        return await self._page(request, login)

    async def _page(self, request: Request, login: Login) -> Response:
        path, csrf = request.path, login.csrf
        if path == "/":
            doc = await self.view.snapshot()
            now = time.time()
            self.history.add(now, doc)
            return _html(pages.overview(doc, self.history.series(now), csrf), 200)
        if path == "/offenders":
            doc = await self.view.snapshot()
            listed = await self.view.bans()
            top = pages.top_offenders(doc)
            scores = await self.view.harvest_scores([a for a, _ in top])
            return _html(pages.offenders(top, scores, doc, listed, csrf), 200)
        if path == "/bans":
            listed = await self.view.bans()
            return _html(pages.bans(listed, csrf, request.query.get("done", "")), 200)
        if path == "/directory":
            address = request.query.get("address", "").strip()
            answer = None
            if address:
                self.audit.write(login.user, request.peer, "lookup", "attempt", target=address)
                answer = await self.view.lookup(address)
                self.audit.write(login.user, request.peer, "lookup", answer[0], target=address)
            return _html(pages.directory(csrf, address, answer), 200)
        if path == "/transactions":
            doc = await self.view.snapshot()
            search = request.query.get("q", "").strip()
            return _html(pages.transactions(doc.get("recent", []), csrf, search), 200)
        if path == "/config":
            return _html(pages.configuration(self.view.settings.model_dump(mode="json"), csrf), 200)
        return 404, {"Content-Type": "text/plain"}, b"not found\n"

    async def _login(self, request: Request) -> Response:
        if request.method == "GET":
            return _html(pages.login_form(), 200)
        if request.method != "POST":
            return 405, {"Content-Type": "text/plain"}, b"GET or POST\n"
        name = request.form.get("username", "")[:64]
        stamp = self.throttle.reserve(request.peer)
        if stamp is None:
            if self.throttle.worth_noting(request.peer):
                self.audit.write(name, request.peer, "login", "refused: too many failures")
            return _html(pages.login_form("Too many failed logins: try again later."), 429)
        password = request.form.get("password", "")
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(self._verifier, users.verify, self.users, name, password)
        if not ok:
            self.audit.write(name, request.peer, "login", "refused: wrong user or password")
            return _html(pages.login_form("Wrong user name or password."), 403)
        self.throttle.refund(request.peer, stamp)
        self.audit.write(name, request.peer, "login", "ok")
        sid, _ = self.sessions.open(name, request.peer)
        return _see("/", **{"Set-Cookie": self._cookie(sid)})

    async def _logout(self, request: Request, login: Login) -> Response:
        self.sessions.close(request.sid)
        self.audit.write(login.user, request.peer, "logout", "ok")
        return _see("/login", **{"Set-Cookie": self._cookie("", "; Max-Age=0")})

    def _cookie(self, value: str, extra: str = "") -> str:
        secure = "; Secure" if self.settings.tls else ""
        return f"{COOKIE}={value}; Path=/{extra}; HttpOnly; SameSite=Strict{secure}"

    async def _ban(self, request: Request, login: Login) -> Response:
        user = login.user
        target = request.form.get("address", "").strip()
        text = request.form.get("duration", "") or str(MANUAL_BAN_TIME)
        self.audit.write(user, request.peer, "ban", "attempt", target=target, seconds=text)
        try:
            seconds = float(text)
            done = await self.view.ban(target, seconds)
        except ValueError as err:
            self.audit.write(user, request.peer, "ban", f"refused: {err}", target=target)
            return _html(pages.bans(await self.view.bans(), login.csrf, f"ban refused: {err}"), 400)
        self.audit.write(user, request.peer, "ban", "ok", target=done["target"], seconds=seconds)
        return _see("/bans?" + urlencode({"done": f"banned {done['target']}"}))

    async def _unban(self, request: Request, login: Login) -> Response:
        user = login.user
        target = request.form.get("address", "").strip()
        self.audit.write(user, request.peer, "unban", "attempt", target=target)
        try:
            lifted = await self.view.unban(target)
        except ValueError as err:
            lifted, target = False, f"{target} ({err})"
        self.audit.write(user, request.peer, "unban", "ok" if lifted else "not banned",
                         target=target)  # fmt: skip
        done = f"{'unbanned' if lifted else 'not banned:'} {target}"
        return _see("/bans?" + urlencode({"done": done}))  # quoted: no header injection


def _unspecified(host: str) -> bool:
    return _address(host) and ipaddress.ip_address(host).is_unspecified


def _address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class ConsoleThread:
    """Runs a Console on its own event loop in a daemon thread."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="console", daemon=True)

    def start(self) -> tuple[str, int]:
        """Start listening (OSError if it cannot); returns the bound address."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.console.start(), self.loop).result()
        assert self.console.address is not None
        logs.event(
            "console_listening", address=f"{self.console.address[0]}:{self.console.address[1]}"
        )
        return self.console.address

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.console.stop(), self.loop).result(5.0)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5.0)
        with contextlib.suppress(RuntimeError):
            self.loop.close()


def start(settings: Settings, gateway: Any) -> ConsoleThread:
    """The console for `gateway`, listening. UsersError or OSError when it cannot start."""
    thread = ConsoleThread(Console(settings, GatewayView(gateway, asyncio.get_running_loop())))
    thread.start()
    return thread
