"""Fixtures for the relay tests: settings, messages, and real downstream servers on loopback."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP

from mailmoat.config import Settings, build
from mailmoat.message import Envelope, Message, Spool
from tests.relay.relay_support import (
    TRACE,
    AiosmtpdFactory,
    FakeDownstream,
    FakeFactory,
    MessageFactory,
    Recorder,
    SettingsFactory,
    TLSFiles,
)


@pytest.fixture
def make_settings(tmp_path: Path) -> SettingsFactory:
    """Settings with short timeouts; `port=` points relay.downstream at 127.0.0.1:port."""

    def make(port: int | None = None, **relay: Any) -> Settings:
        data: dict[str, Any] = {
            "server": {"hostname": "gw.test"},
            "maildir": {"path": str(tmp_path / "Maildir")},
            "relay": {
                "connect_timeout": 2.0,
                "command_timeout": 2.0,
                "data_timeout": 2.0,
                "pool_wait": 2.0,
                "idle_timeout": 5.0,
                **relay,
            },
        }
        if port is not None:
            data["relay"]["downstream"] = f"127.0.0.1:{port}"
        return build(data)

    return make


@pytest.fixture
def make_message() -> Iterator[MessageFactory]:
    spools: list[Spool] = []

    def make(
        content: bytes = b"Subject: test\r\n\r\nHello.\r\n",
        mail_from: str = "alice@example.org",
        rcpts: tuple[str, ...] | list[str] = ("bob@example.net",),
        queue_id: str = "4Qtest1",
        trace: bytes = TRACE,
        memory_limit: int = 256 * 1024,
        **envelope: Any,
    ) -> Message:
        spool = Spool(memory_limit)
        for i in range(0, len(content), 10_000):  # written in pieces like a session would
            spool.write(content[i : i + 10_000])
        spools.append(spool)
        env = Envelope(mail_from, list(rcpts), **envelope)
        return Message(env, spool, queue_id, trace)

    yield make
    for s in spools:
        s.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt"),
            *("ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return TLSFiles(cert, key)


@pytest.fixture
async def aiosmtpd_server() -> AsyncIterator[AiosmtpdFactory]:
    servers: list[asyncio.Server] = []

    async def start(
        lmtp: bool = False,
        pipelining: bool = False,
        tls_context: ssl.SSLContext | None = None,
        idle_timeout: float = 300,
        **recorder: Any,
    ) -> tuple[int, Recorder]:
        handler = Recorder(lmtp=lmtp, pipelining=pipelining, **recorder)
        loop = asyncio.get_running_loop()
        cls = LMTP if lmtp else SMTP

        def factory() -> SMTP:
            return cls(
                handler,
                hostname="downstream.test",
                enable_SMTPUTF8=True,
                decode_data=False,
                tls_context=tls_context,
                timeout=idle_timeout,
                loop=loop,
            )

        server = await loop.create_server(factory, "127.0.0.1", 0)
        servers.append(server)
        return int(server.sockets[0].getsockname()[1]), handler

    yield start
    for s in servers:
        s.close()
        await s.wait_closed()


@pytest.fixture
async def fake_downstream() -> AsyncIterator[FakeFactory]:
    fakes: list[FakeDownstream] = []

    async def start(**kw: Any) -> FakeDownstream:
        fake = await FakeDownstream(**kw).start()
        fakes.append(fake)
        return fake

    yield start
    for f in fakes:
        await f.stop()
