"""Bad input to the console gets a clear HTTP error and leaves it serving; over TLS the cookie
is Secure and only an https Origin is the console's own."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat import config
from mailmoat.console import users
from mailmoat.console.server import Console, ConsoleThread
from mailmoat.console.view import GatewayView
from mailmoat.limits import CONSOLE_MAX_BODY, CONSOLE_MAX_CLIENTS, CONSOLE_MAX_HEAD
from mailmoat.server.gateway import Gateway
from tests.support.console import PASSWORD, USER, Browserless, running_console
from tests.support.tls import self_signed_cert
from tests.support.waiting import wait_until


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_malformed_requests_get_a_clear_error(tmp_path: Path) -> None:
    with running_console(tmp_path) as (_, port):
        cases = {
            b"GARBAGE\r\n\r\n": b"400",
            b"GET / SMTP/1.0\r\n\r\n": b"400",
            b"GET / HTTP/1.1\r\nHost: x\r\n": b"400",  # the head never ends
            b"GET / HTTP/1.1\r\nX: " + b"a" * CONSOLE_MAX_HEAD + b"\r\n\r\n": b"400",
            b"POST /login HTTP/1.1\r\nContent-Length: nine\r\n\r\n": b"400",
            b"POST /login HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (CONSOLE_MAX_BODY + 1): b"413",
            b"POST /login HTTP/1.1\r\nContent-Length: 50\r\n\r\nshort": b"400",
            b"DELETE /bans HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n": b"303",  # to the login page
            b"GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n": b"421",  # not a name of ours
        }
        for request, status in cases.items():
            answer = _raw(port, request)
            assert answer.startswith(b"HTTP/1.1 " + status + b" "), (request[:60], answer[:80])
        assert Browserless(port).login() == 303  # and it still serves


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """A console on a gateway that is built but not started: no request a fuzzer makes gets
    past the login."""
    folder = tmp_path_factory.mktemp("console-fuzz")
    users.add(folder / "users", USER, PASSWORD)
    keys = {
        "console.listen": "127.0.0.1:0",
        "console.users_file": str(folder / "users"),
        "console.audit_log": str(folder / "audit"),
        "maildir.path": str(folder / "md"),
    }
    s = config.load(None, keys)
    loop = asyncio.new_event_loop()  # the "gateway's" loop: its snapshot is {}
    runner = threading.Thread(target=loop.run_forever, daemon=True)
    runner.start()
    try:
        yield Console(s, GatewayView(Gateway(s), loop))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join(20)
        loop.close()


REQUESTS = st.binary(max_size=600) | st.builds(
    lambda head, body: head + b"\r\n\r\n" + body,
    st.binary(max_size=200),
    st.binary(max_size=200),
)


@settings(max_examples=200, deadline=None)
@given(data=REQUESTS)
def test_any_bytes_get_an_http_answer(console: Console, data: bytes) -> None:
    async def answer() -> tuple[int, dict[str, str], bytes]:
        reader = asyncio.StreamReader(limit=CONSOLE_MAX_HEAD)
        reader.feed_data(data)
        reader.feed_eof()
        return await console._read(reader, "127.0.0.1")

    status = asyncio.run(answer())[0]
    assert status in (200, 303, 400, 403, 404, 405, 413, 421, 429), (status, data)


def test_over_tls_the_cookie_is_secure_and_the_origin_https(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    tls = {"console.tls_cert": str(cert), "console.tls_key": str(key)}
    with running_console(tmp_path, **tls) as (_, port):
        context = ssl.create_default_context(cafile=str(cert))
        plain = Browserless(port, context)
        plain.origin = f"http://127.0.0.1:{port}"  # the console's address, the wrong scheme
        assert plain.login() == 403
        client = Browserless(port, context)
        assert client.login() == 303
        assert "; Secure" in client.last_cookie and "HttpOnly" in client.last_cookie
        assert client.request("GET", "/")[0] == 200
        assert client.request("POST", "/logout", {"csrf_token": client.csrf("/")})[0] == 303
        assert "Max-Age=0" in client.last_cookie and "; Secure" in client.last_cookie


def test_slow_senders_filling_every_slot_cannot_keep_the_admin_out(console: Console) -> None:
    thread = ConsoleThread(console)
    port = thread.start()[1]
    slow: list[socket.socket] = []
    try:
        for _ in range(CONSOLE_MAX_CLIENTS):  # slowloris: a request head that never ends
            sock = socket.create_connection(("127.0.0.1", port), timeout=20)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(sock)
        wait_until(lambda: console._busy >= CONSOLE_MAX_CLIENTS, "every slot is held")
        # the administrator is served at once, and the slowest sender made room for it
        answer = _raw(port, b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]
        assert slow[0].recv(100) == b""  # closed without an answer
        wait_until(lambda: console._busy <= CONSOLE_MAX_CLIENTS, "the bound holds")
    finally:
        for sock in slow:
            sock.close()
        thread.stop()
