"""The admin endpoint against what a web browser on the administrator's machine can send:
DNS rebinding (a foreign Host), cross-site requests (a foreign Origin, Sec-Fetch-Site) and
state changes without the X-Mailmoat-Admin header are refused with 403 and change nothing,
while `mailmoat ban`/`unban` keep working; and slow clients holding every slot never cost
/healthz its answer, nor anyone else a reply (503, never an empty close)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailmoat.cli import main
from mailmoat.server import admin
from mailmoat.server.admin import request
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.waiting import wait_until


def _endpoint(gw: RunningGateway) -> tuple[str, int]:
    host, port = gw.gateway.admin.address  # type: ignore[union-attr, misc]
    return host, port


def _http(gw: RunningGateway, head: str) -> tuple[int, bytes]:
    with socket.create_connection(_endpoint(gw), timeout=10) as sock:
        sock.sendall(head.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    assert response.startswith(b"HTTP/1.0 "), response
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


def _bans(gw: RunningGateway) -> list[object]:
    host, port = _endpoint(gw)
    status, body = request(f"{host}:{port}", "/bans")
    assert status == 200, body
    listed = json.loads(body)
    assert isinstance(listed, list)
    return listed


BAN = "/bans?target=127.0.0.0/8&seconds=31536000"


def _entries(listed: list[object]) -> list[tuple[str, str, float]]:
    """(target, kind, seconds left) of each ban in a /bans answer."""
    return [(e["target"], e["kind"], e["seconds"]) for e in listed]  # type: ignore[index]


@pytest.mark.parametrize(
    "fields",
    [
        # DNS rebinding: the page's own name in Host, same origin in the browser's eyes
        "Host: attacker.example:{port}\r\nOrigin: http://attacker.example:{port}\r\n",
        "Host: attacker.example\r\n",
        # a cross-site form or fetch(): a foreign Origin
        "Host: 127.0.0.1:{port}\r\nOrigin: http://attacker.example\r\nContent-Type: text/plain\r\n",
        "Host: 127.0.0.1:{port}\r\nOrigin: null\r\n",
        "Host: 127.0.0.1:{port}\r\nSec-Fetch-Site: cross-site\r\n",
        # no Origin (an old browser, a no-cors request): a state change needs the header
        "Host: 127.0.0.1:{port}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\n",
    ],
)
@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_a_browser_cannot_change_bans(tmp_path: Path, fields: str, method: str) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        port = _endpoint(gw)[1]
        if method == "DELETE":
            host = f"127.0.0.1:{port}"
            assert CliRunner().invoke(main, ["ban", "127.0.0.0/8", "--admin", host]).exit_code == 0
        before = _bans(gw)
        status, body = _http(gw, f"{method} {BAN} HTTP/1.1\r\n{fields.format(port=port)}\r\n")
        assert status == 403, body
        assert body.startswith(b"forbidden: ")
        after = _bans(gw)
        # the same bans, none renewed (the seconds left tick down between the two reads)
        assert [entry[:2] for entry in _entries(after)] == [e[:2] for e in _entries(before)]
        assert all(a[2] <= b[2] for a, b in zip(_entries(after), _entries(before), strict=True))


def test_a_foreign_host_reads_nothing(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        for path in ("/bans", "/stats", "/metrics", "/healthz"):
            status, body = _http(gw, f"GET {path} HTTP/1.1\r\nHost: attacker.example\r\n\r\n")
            assert (status, body) == (403, b"forbidden: Host is not this admin endpoint\n")


def test_own_host_and_origin_and_the_cli_still_work(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        port = _endpoint(gw)[1]
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", "LOCALHOST"):
            assert _http(gw, f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n")[0] == 200
        own = f"Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"
        assert _http(gw, f"GET /stats HTTP/1.1\r\n{own}\r\n")[0] == 200
        assert _http(gw, "GET /stats HTTP/1.0\r\n\r\n")[0] == 200  # no Host: not a browser
        status, _ = _http(
            gw, f"POST /bans?target=127.0.77.0/24 HTTP/1.1\r\n{own}X-Mailmoat-Admin: 1\r\n\r\n"
        )
        assert status == 200
        endpoint = f"127.0.0.1:{port}"
        done = CliRunner().invoke(main, ["ban", "127.0.78.1", "--for", "60", "--admin", endpoint])
        assert done.exit_code == 0, done.output
        targets = {entry["target"] for entry in _bans(gw)}  # type: ignore[index]
        assert {"127.0.77.0/24", "127.0.78.1"} <= targets
        done = CliRunner().invoke(main, ["unban", "127.0.78.1", "--admin", endpoint])
        assert done.exit_code == 0, done.output
        assert "127.0.78.1" not in {entry["target"] for entry in _bans(gw)}  # type: ignore[index]


def test_slow_clients_never_cost_healthz_its_answer(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        server = gw.gateway.admin  # type: ignore[union-attr]
        assert server is not None
        slow = []
        try:
            for _ in range(admin.MAX_CLIENTS):
                sock = socket.create_connection(_endpoint(gw), timeout=10)
                sock.sendall(b"GET /healthz HTTP/1.0\r\n")  # half a head, then nothing
                slow.append(sock)
            wait_until(lambda: server._busy >= admin.MAX_CLIENTS, "slow clients hold every slot")
            # /healthz still answers; anything else gets a clear 503, not an empty close
            assert _http(gw, "GET /healthz HTTP/1.0\r\n\r\n") == (200, b"ok\n")
            status, body = _http(gw, "GET /stats HTTP/1.0\r\n\r\n")
            assert (status, body) == (503, b"busy: too many admin connections\n")
            # past the health slots too: 503 without a byte read
            extra = []
            try:
                for _ in range(admin.HEALTH_SLOTS):
                    sock = socket.create_connection(_endpoint(gw), timeout=10)
                    extra.append(sock)
                wait_until(lambda: server._busy >= admin.MAX_CLIENTS + admin.HEALTH_SLOTS)
                assert _http(gw, "GET /healthz HTTP/1.0\r\n\r\n")[0] == 503
            finally:
                for sock in extra:
                    sock.close()
            # the slow clients are answered once their head deadline passes, and let go
            for sock in slow:
                assert sock.recv(200).startswith(b"HTTP/1.0 408 Request Timeout\r\n")
            wait_until(lambda: server._busy == 0, "the slots are free again")
            assert _http(gw, "GET /stats HTTP/1.0\r\n\r\n")[0] == 200
        finally:
            for sock in slow:
                sock.close()
