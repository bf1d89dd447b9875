"""The admin endpoint speaks HTTP: /stats (JSON), /metrics (Prometheus text, parsed here with
prometheus_client's own parser, summed over the supervisor and its workers), /healthz (200
only while the gateway listens and can deliver), a bearer token when one is configured, and
bounded, clear answers to bad requests."""

from __future__ import annotations

import shutil
import smtplib
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from mailmoat import config
from mailmoat.cli import main
from mailmoat.server import health
from mailmoat.server.admin import request
from tests.server.test_workers import served
from tests.support.gateway import gateway_settings, running_gateway
from tests.support.ports import free_port
from tests.support.raw_client import refused_at_connect

TOKEN = "s3cret-token-0123456789"


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _until(check: Callable[[], bool], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _admin(gw: object) -> str:
    address = gw.gateway.admin.address  # type: ignore[attr-defined]
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"


def test_metrics_parse_and_count_refusals_and_sessions(tmp_path: Path) -> None:
    settings = {"admin.listen": "127.0.0.1:0", "admission.deny_networks": ["127.0.40.0/24"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        endpoint = _admin(gw)
        for _ in range(3):
            assert refused_at_connect(gw.port, "127.0.40.1").startswith(b"421 4.7.0")
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
            client.sendmail("bob@sender.test", ["alice@example.test"], b"Subject: m\r\n\r\nx\r\n")
        _until(lambda: _samples(request(endpoint, "/metrics")[1]).get(
            ("mailmoat_closed_total", (("reason", "quit"),))) == 1)  # fmt: skip
        status, body = request(endpoint, "/metrics")
        assert status == 200
        got = _samples(body)
        assert got[("mailmoat_refused_total", (("reason", "denied"),))] == 3
        assert got[("mailmoat_connections_accepted_total", ())] == 4
        assert got[("mailmoat_connections_active", ())] == 0
        assert got[("mailmoat_resident_memory_bytes", ())] > 1_000_000
        assert got[("mailmoat_messages_accepted_total", ())] == 1
        assert got[("mailmoat_messages_bytes_total", ())] > len(b"Subject: m\r\n\r\nx\r\n")
        # per-stage latency: one MAIL, one RCPT, one end of data, each within its buckets
        for stage in ("mail", "rcpt", "message"):
            name = f"mailmoat_latency_{stage}_seconds"
            assert got[(f"{name}_count", ())] == 1
            assert got[(f"{name}_bucket", (("le", "+Inf"),))] == 1
            assert 0 < got[(f"{name}_sum", ())] < 30


def test_messages_deferred_and_refused_are_counted(tmp_path: Path) -> None:
    settings = {"admin.listen": "127.0.0.1:0", "smtp.max_header_size": 4096}
    with running_gateway(tmp_path / "md", **settings) as gw:
        endpoint = _admin(gw)
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
            client.ehlo("c.test")
            client.mail("a@b.test")
            client.rcpt("alice@example.test")
            assert client.data(b" continues nothing\r\n\r\nx\r\n")[0] == 554
        got = _samples(request(endpoint, "/metrics")[1])
        assert got[("mailmoat_messages_refused_total", ())] == 1
        assert ("mailmoat_messages_accepted_total", ()) not in got
        assert got[("mailmoat_rejected_total", (("reason", "header_defect"),))] == 1


def test_metrics_are_summed_over_the_workers(tmp_path: Path) -> None:
    with served(tmp_path) as srv:
        held = srv.fill_local()  # the next sessions go to the workers
        for _ in range(4):
            srv.send()
        _until(lambda: sum(w["sessions"] for w in srv.stats()["workers"]) == 0)
        for sock in held:
            sock.close()

        def quits() -> float:
            got = _samples(request(str(srv.admin), "/metrics")[1])
            return got.get(("mailmoat_closed_total", (("reason", "quit"),)), 0)

        _until(lambda: quits() >= 4)
        got = _samples(request(str(srv.admin), "/metrics")[1])
        assert got[("mailmoat_worker_processes", ())] == 2
        # Only the workers ran those sessions: the sum has what the supervisor never saw.
        assert srv.stats()["counters"]["closed.quit"] == quits() >= 4


def test_healthz_follows_the_maildir(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _admin(gw)
        assert request(endpoint, "/healthz") == (200, b"ok\n")  # made at the first delivery
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as client:
            client.sendmail("bob@sender.test", ["alice@example.test"], b"Subject: m\r\n\r\nx\r\n")
        assert request(endpoint, "/healthz") == (200, b"ok\n")
        shutil.rmtree(tmp_path / "md" / "tmp")
        (tmp_path / "md" / "tmp").write_text("not a folder")
        status, body = request(endpoint, "/healthz")
        assert status == 503 and body.startswith(b"maildir: ")
        (tmp_path / "md" / "tmp").unlink()
        (tmp_path / "md" / "tmp").mkdir()
        assert request(endpoint, "/healthz") == (200, b"ok\n")


@pytest.mark.peers
def test_healthz_follows_the_downstream(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.smtp_sink import SmtpSink

    # the last probe's answer is reused for PROBE_EVERY (5 s): a shorter one, not a 5 s wait
    monkeypatch.setattr(health, "PROBE_EVERY", 0.3)
    port = free_port()
    settings = {"admin.listen": "127.0.0.1:0", "relay.downstream": f"127.0.0.1:{port}"}
    with running_gateway(tmp_path / "md", **settings) as gw:
        endpoint = _admin(gw)
        status, body = request(endpoint, "/healthz", timeout=10)
        assert status == 503 and body.startswith(f"downstream: 127.0.0.1:{port}".encode())
        sink = SmtpSink(port=port).start()
        try:
            _until(lambda: request(endpoint, "/healthz", timeout=10) == (200, b"ok\n"))
        finally:
            sink.stop()


def test_healthz_follows_a_reload_that_moves_delivery(tmp_path: Path) -> None:
    """A reload that sets relay.downstream (or another maildir.path): /healthz probes where
    mail goes now, not where it went at the start."""
    dead = free_port()  # nothing listens there
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        endpoint = _admin(gw)
        assert request(endpoint, "/healthz", timeout=10) == (200, b"ok\n")
        assert gw.gateway is not None
        moved = gw.settings.model_copy(
            update={
                "relay": gw.settings.relay.model_copy(update={"downstream": f"127.0.0.1:{dead}"})
            }
        )
        gw.run(gw.gateway.reload(moved))
        status, body = request(endpoint, "/healthz", timeout=10)
        assert status == 503 and body.startswith(f"downstream: 127.0.0.1:{dead}".encode())
        gw.run(
            gw.gateway.reload(gateway_settings(tmp_path / "md2", **{"admin.listen": "127.0.0.1:0"}))
        )
        shutil.rmtree(tmp_path / "md2" / "tmp")  # the new delivery made it
        (tmp_path / "md2" / "tmp").write_text("not a folder")
        status, body = request(endpoint, "/healthz", timeout=10)
        assert status == 503 and body.startswith(f"maildir: {tmp_path / 'md2'}".encode())


def test_token_required_when_configured(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    settings = {"admin.listen": "127.0.0.1:0", "admin.token_file": str(token_file)}
    with running_gateway(tmp_path / "md", **settings) as gw:
        endpoint = _admin(gw)
        for path in ("/stats", "/metrics", "/healthz"):
            assert request(endpoint, path)[0] == 401
            assert request(endpoint, path, token="wrong-token-0123456789")[0] == 401
            assert request(endpoint, path, token=TOKEN)[0] == 200
        conf = tmp_path / "m.toml"
        conf.write_text(f'[admin]\nlisten = "{endpoint}"\ntoken_file = "{token_file}"\n')
        result = CliRunner().invoke(main, ["stats", "-c", str(conf)])
        assert result.exit_code == 0 and "connections.active" in result.output
        result = CliRunner().invoke(main, ["stats", "--admin", endpoint])
        assert result.exit_code == 1 and "401" in result.output


def test_a_non_loopback_endpoint_needs_a_token(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as err:
        config.load(None, {"admin.listen": "192.0.2.1:8025"})
    assert err.value.problems[0][0] == "admin.listen"
    assert "needs admin.token_file" in str(err.value)
    short = tmp_path / "short"
    short.write_text("abc\n")
    result = CliRunner().invoke(main, ["config", "check", str(_toml(tmp_path, short))])
    assert result.exit_code != 0
    assert "config error: admin.token_file: " in result.output and "16+" in result.output
    good = tmp_path / "good"
    good.write_text(TOKEN)
    loaded = config.load(None, {"admin.listen": "192.0.2.1:8025", "admin.token_file": str(good)})
    assert loaded.admin.token_file == good


def _toml(tmp_path: Path, token_file: Path) -> Path:
    conf = tmp_path / "admin.toml"
    conf.write_text(f'[admin]\nlisten = "192.0.2.1:8025"\ntoken_file = "{token_file}"\n')
    return conf


def _raw(endpoint: str, data: bytes) -> bytes:
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"GET /nope HTTP/1.0\r\n\r\n", b"404"),
        (b"POST /stats HTTP/1.0\r\nX-Mailmoat-Admin: 1\r\n\r\n", b"405"),
        (b"hello\r\n\r\n", b"400"),
        (b"GET /stats\r\n\r\n", b"400"),
        (b"GET /stats HTTP/1.0\r\n", b"400"),  # the head never ends
        (b"GET /stats HTTP/1.0\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"400"),  # too long
    ],
)
def test_bad_requests_get_a_clear_status(tmp_path: Path, data: bytes, status: bytes) -> None:
    with running_gateway(tmp_path / "md", **{"admin.listen": "127.0.0.1:0"}) as gw:
        answer = _raw(_admin(gw), data)
        assert answer.split(b" ", 2)[1] == status, answer[:200]
