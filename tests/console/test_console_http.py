"""The console's logins, sessions, CSRF and Origin checks over real HTTP (no browser), against
a running gateway: a ban made in the console is refused at connect at once."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pytest import MonkeyPatch

from mailmoat import config
from mailmoat.console import users
from mailmoat.console.auth import LoginThrottle, Sessions
from mailmoat.console.server import Console
from mailmoat.console.view import GatewayView
from mailmoat.limits import (
    CONSOLE_LOGIN_FAILURES,
    CONSOLE_LOGIN_GLOBAL_FAILURES,
    CONSOLE_LOGIN_WINDOW,
)
from mailmoat.server.gateway import Gateway
from tests.support.console import PASSWORD, USER, Browserless, running_console
from tests.support.dns_gateway import captured_logs
from tests.support.raw_client import greeting
from tests.support.waiting import wait_until


def _raw_status(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(request)
        return sock.makefile("rb").readline().split(b" ")[1]


def _audit(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_pages_need_a_login_and_the_cookie_is_locked_down(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        client = Browserless(port)
        for path in ("/", "/bans", "/config", "/directory", "/offenders"):
            status, headers, _ = client.request("GET", path)
            assert (status, headers["location"]) == (303, "/login")
        status, headers, _ = client.request(
            "POST", "/login", {"username": USER, "password": PASSWORD}
        )
        assert status == 303
        cookie = headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        assert len(client.cookie) >= 40
        status, headers, page = client.request("GET", "/")
        assert status == 200 and "<svg id=chart" in page
        assert "default-src 'none'" in headers["content-security-policy"]
        assert "script" not in page
        # logging out ends the session on the server: the old cookie opens nothing
        old = client.cookie
        assert client.request("POST", "/logout", {"csrf_token": client.csrf("/")})[0] == 303
        assert "Max-Age=0" in client.last_cookie and "SameSite=Strict" in client.last_cookie
        client.cookie = old
        assert client.request("GET", "/")[0] == 303
        entries = _audit(tmp_path)
        assert [(e["who"], e["what"], e["result"]) for e in entries] == [
            (USER, "login", "ok"),
            (USER, "logout", "ok"),
        ]
        assert entries[0]["from"] == "127.0.0.1" and entries[0]["when"]


def test_a_wrong_password_is_refused_and_failures_are_throttled(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        client = Browserless(port)
        assert client.login(password="wrong") == 403
        assert client.login(user="nobody") == 403
        assert client.cookie == ""
        for _ in range(CONSOLE_LOGIN_FAILURES - 2):
            assert client.login(password="wrong") == 403
        # past the limit even the right password is refused from this address for a while
        assert client.login() == 429
        assert client.cookie == ""
        results = [e["result"] for e in _audit(tmp_path)]
        assert results[-1] == "refused: too many failures"
        assert results.count("refused: wrong user or password") == CONSOLE_LOGIN_FAILURES


def test_failures_count_per_network_so_rotating_addresses_gains_nothing(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        for n in range(CONSOLE_LOGIN_FAILURES):
            assert Browserless(port, source=f"127.0.0.{10 + n}").login(password="wrong") == 403
        # another address of the same /24: refused even with the right password
        assert Browserless(port, source="127.0.0.200").login() == 429
        # another /24 is another network: the admin there logs in
        assert Browserless(port, source="127.0.1.200").login() == 303
        # a flood of refused logins leaves one audit line per network, not one each
        for n in range(30):
            assert Browserless(port, source=f"127.0.0.{100 + n}").login() == 429
        refused = [e for e in _audit(tmp_path) if e["result"] == "refused: too many failures"]
        assert [e["from"] for e in refused] == ["127.0.0.200"]


def test_parallel_wrong_logins_cannot_outrun_the_count(tmp_path: Path) -> None:
    tries = CONSOLE_LOGIN_FAILURES + 7
    with running_console(tmp_path) as (_, port):
        with ThreadPoolExecutor(tries) as pool:
            answers = list(pool.map(
                lambda n: Browserless(port, source="127.0.2.7").login(password=f"guess{n}"),
                range(tries),
            ))  # fmt: skip
        assert sorted(answers) == [403] * CONSOLE_LOGIN_FAILURES + [429] * 7
        guessed = [e for e in _audit(tmp_path) if e["result"] == "refused: wrong user or password"]
        assert len(guessed) == CONSOLE_LOGIN_FAILURES


def test_a_ban_needs_the_csrf_token_and_the_own_origin(tmp_path: Path) -> None:
    with running_console(tmp_path) as (gw, port):
        client = Browserless(port)
        assert client.login() == 303
        token = client.csrf()
        target = {"address": "127.0.0.77", "duration": "600"}
        assert client.request("POST", "/bans", target)[0] == 403  # no token
        assert client.request("POST", "/bans", target | {"csrf_token": "x" * 43})[0] == 403
        assert client.request("POST", "/bans", target | {"csrf_token": token},
                              Origin="http://attacker.example")[0] == 403  # fmt: skip
        assert greeting(gw.port, "127.0.0.77").startswith(b"220")
        # the right token from the console's own origin: refused at connect at once
        status, headers, _ = client.request("POST", "/bans", target | {"csrf_token": token})
        assert status == 303, headers
        assert greeting(gw.port, "127.0.0.77").startswith(b"421 4.7.0")
        assert "127.0.0.77" in client.request("GET", "/bans")[2]
        status, _, _ = client.request(
            "POST", "/bans/remove", {"address": "127.0.0.77", "csrf_token": token}
        )
        assert status == 303
        assert greeting(gw.port, "127.0.0.77").startswith(b"220")
        # a bad address: a clear 400, nothing banned
        status, _, page = client.request(
            "POST", "/bans", {"address": "not-an-ip", "duration": "60", "csrf_token": token}
        )
        assert status == 400 and "ban refused" in page
        what = [(e["what"], e["result"]) for e in _audit(tmp_path)]
        assert what.count(("POST /bans", "refused: bad CSRF token")) == 2
        assert ("POST /bans", "refused: cross-origin") in what
        assert what.index(("ban", "attempt")) < what.index(("ban", "ok"))
        assert what.index(("unban", "attempt")) < what.index(("unban", "ok"))


def test_an_action_that_cannot_be_audited_is_refused_and_logged(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    overrides = {"console.audit_log": str(folder / "audit.jsonl")}
    with running_console(tmp_path, **overrides) as (gw, port), captured_logs() as logged:
        client = Browserless(port)
        assert client.login() == 303
        token = client.csrf()
        (folder / "audit.jsonl").unlink()
        folder.rmdir()
        form = {"address": "127.0.0.78", "duration": "600", "csrf_token": token}
        status, _, page = client.request("POST", "/bans", form)
        assert status == 503 and "audit log" in page
        assert greeting(gw.port, "127.0.0.78").startswith(b"220")  # not banned, unrecorded
        status, _, _ = client.request("POST", "/bans/remove", form)
        assert status == 503
        failed = logged.of("console_audit_failed")
        assert [(f["what"], f["result"]) for f in failed] == [("ban", "attempt"),
                                                              ("unban", "attempt")]  # fmt: skip
        assert failed[0]["target"] == "127.0.0.78" and failed[0]["error"]
        # a login that cannot be recorded opens no session
        assert Browserless(port).login() == 503


def test_a_login_form_from_another_site_is_refused(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        client = Browserless(port)
        form = {"username": USER, "password": PASSWORD}
        assert client.request("POST", "/login", form, Origin="http://evil.example")[0] == 403
        assert client.cookie == ""


def test_a_rebound_name_is_refused_for_every_request(tmp_path: Path) -> None:
    with running_console(tmp_path) as (gw, port):
        evil = f"evil.test:{port}"
        client = Browserless(port)
        client.origin = f"http://{evil}"  # what a rebinding page's requests carry
        form = {"username": USER, "password": PASSWORD}
        for method, path in (("GET", "/login"), ("GET", "/console.css"), ("POST", "/login")):
            status, _, page = client.request(method, path, form, Host=evil)
            assert status == 421 and "Host" in page, (method, path)
        assert client.cookie == ""
        # a session does not help it either
        good = Browserless(port)
        assert good.login() == 303
        token = good.csrf()
        target = {"address": "127.0.0.79", "duration": "600", "csrf_token": token}
        assert good.request("POST", "/bans", target, Host=evil, Origin=f"http://{evil}")[0] == 421
        assert greeting(gw.port, "127.0.0.79").startswith(b"220")
        # the names the console is reached by, also through `ssh -L 9000:127.0.0.1:PORT`
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost:9000", "127.0.0.1"):
            assert good.request("GET", "/", Host=host)[0] == 200, host
        assert good.request("GET", "/", Host="127.0.0.1:x")[0] == 421
        assert _raw_status(port, b"GET /login HTTP/1.0\r\n\r\n") == b"421"  # no Host at all


def test_console_hostname_is_the_one_name_besides_the_address(tmp_path: Path) -> None:
    with running_console(tmp_path, **{"console.hostname": "Console.Example.TEST"}) as (_, port):
        client = Browserless(port)
        assert client.request("GET", "/login", Host=f"console.example.test:{port}")[0] == 200
        assert client.request("GET", "/login", Host=f"other.example.test:{port}")[0] == 421
    with running_console(tmp_path) as (_, port):
        client = Browserless(port)
        assert client.request("GET", "/login", Host=f"console.example.test:{port}")[0] == 421


def test_off_loopback_the_host_must_name_the_listen_address_and_port(tmp_path: Path) -> None:
    keys = {"maildir.path": str(tmp_path), "console.users_file": str(tmp_path / "users"),
            "console.tls_cert": "/c", "console.tls_key": "/k"}  # fmt: skip
    users.add(tmp_path / "users", USER, PASSWORD)
    loop = asyncio.new_event_loop()
    for listen, hostname, host, ok in (
        ("192.0.2.1:8443", "", "192.0.2.1:8443", True),
        ("192.0.2.1:8443", "", "192.0.2.1:9443", False),
        ("192.0.2.1:8443", "", "localhost:8443", False),
        ("192.0.2.1:8443", "mx.example.test", "mx.example.test:8443", True),
        ("0.0.0.0:8443", "", "198.51.100.7:8443", True),
        ("0.0.0.0:8443", "", "[2001:db8::1]:8443", True),
        ("0.0.0.0:8443", "", "rebound.example.test:8443", False),
    ):
        settings = config.load(
            None, keys | {"console.listen": listen, "console.hostname": hostname}
        )
        console = Console(settings, GatewayView(Gateway(settings), loop))
        assert console._our_host(host) is ok, (listen, host)
    loop.close()


def test_sessions_are_bounded_and_expire() -> None:
    sessions = Sessions(lifetime=0.0)
    sid, _ = sessions.open("a", "127.0.0.1")
    assert sessions.get(sid) is None
    assert sessions.get("made-up") is None


def test_a_login_unused_for_session_time_ends(tmp_path: Path) -> None:
    with running_console(tmp_path, **{"console.session_time": 1.0}) as (_, port):
        client = Browserless(port)
        assert client.login() == 303
        used = time.monotonic()
        assert client.request("GET", "/")[0] == 200
        wait_until(lambda: time.monotonic() > used + 1.5, "the session time has passed")
        assert client.request("GET", "/")[0] == 303


def test_an_unban_of_a_crafted_target_cannot_add_a_header(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        client = Browserless(port)
        assert client.login() == 303
        token = client.csrf()
        crafted = "1.2.3.4\r\nSet-Cookie: evil=1"
        status, headers, _ = client.request(
            "POST", "/bans/remove", {"address": crafted, "csrf_token": token}
        )
        assert status == 303 and "evil" not in headers.get("set-cookie", "")
        assert "\r" not in headers["location"] and "\n" not in headers["location"]
        status, _, page = client.request("GET", headers["location"])
        assert status == 200 and "not banned: 1.2.3.4" in page


def test_the_throttle_counts_v6_per_64_and_has_a_global_budget(monkeypatch: MonkeyPatch) -> None:
    throttle = LoginThrottle()
    assert throttle.network("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    assert throttle.network("::ffff:192.0.2.77") == "192.0.2.0/24"
    for n in range(CONSOLE_LOGIN_FAILURES):
        assert throttle.reserve(f"2001:db8:1:2::{n + 1:x}") is not None
    assert throttle.reserve("2001:db8:1:2:ffff::9") is None
    # a right password gives its reservation back
    stamp = throttle.reserve("192.0.2.1")
    assert stamp is not None
    throttle.refund("192.0.2.1", stamp)
    # failures spread over networks stop at the global budget, for every network
    spread = CONSOLE_LOGIN_GLOBAL_FAILURES - CONSOLE_LOGIN_FAILURES
    for n in range(spread):
        assert throttle.reserve(f"198.51.{n}.1") is not None
    assert throttle.reserve("203.0.113.1") is None
    assert throttle.reserve("192.0.2.1") is None
    # refusals are audited once per network, and at most the global budget of them in all
    assert throttle.worth_noting("203.0.113.1") and not throttle.worth_noting("203.0.113.2")
    noted = [
        throttle.worth_noting(f"2001:db8:{n:x}::1") for n in range(CONSOLE_LOGIN_GLOBAL_FAILURES)
    ]
    assert noted.count(True) == CONSOLE_LOGIN_GLOBAL_FAILURES - 1
    # and all of it ages out after the window
    later = time.monotonic() + CONSOLE_LOGIN_WINDOW + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    assert throttle.reserve("2001:db8:1:2::1") is not None
