"""A client that resets the connection right after the final dot (README, "A client that
vanishes after the final dot"): the message was received in full, so delivery runs to its end,
and whatever lands is complete and byte-equal to what was sent; never a truncated or empty file.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.server.gateway import Gateway
from tests.support.fake_downstream import FakeDownstream

ROUNDS = 80


def _body(round_: int, lines: int) -> bytes:
    head = b"From: a@b.test\r\nSubject: round %d\r\n\r\n" % round_
    return head + b"".join(
        b"%03d %06d .the quick brown fox\r\n" % (round_, i) for i in range(lines)
    )


def _pause(round_: int) -> float:
    """From no pause to 4 ms: the reset lands before, while and after the delivery runs."""
    return (round_ % 17) / 4000


def _reply(sock: socket.socket, buf: bytearray) -> bytes:
    """Read one (possibly multi-line) reply."""
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("gateway closed the connection")
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        if line[3:4] != b"-":
            return line


def _send_and_reset(port: int, body: bytes, pause: float) -> None:
    """One transaction, the final dot, then an RST (SO_LINGER 0) `pause` seconds later,
    without reading the reply."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        buf = bytearray()
        assert _reply(sock, buf).startswith(b"220")
        for command, code in (
            (b"EHLO client.test", b"250"),
            (b"MAIL FROM:<a@b.test>", b"250"),
            (b"RCPT TO:<bob@example.test>", b"250"),
            (b"DATA", b"354"),
        ):
            sock.sendall(command + b"\r\n")
            assert _reply(sock, buf).startswith(code)
        stuffed = body.replace(b"\r\n.", b"\r\n..")
        sock.sendall(stuffed + b".\r\n")
        time.sleep(pause)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    finally:
        sock.close()


async def _gateway(tmp_path: Path, **overrides: Any) -> tuple[Gateway, int]:
    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "Maildir"),
            "dns.checks": False,
            "admission.max_rate": 0,  # one client, many connections
            **overrides,
        },
    )
    gw = Gateway(settings)
    bound = await gw.start()
    return gw, bound[0][1]


async def _settled(gw: Gateway) -> None:
    """Every session (and so every delivery it started) has ended."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while gw.sessions and loop.time() < deadline:
        await asyncio.sleep(0.05)
    assert not gw.sessions


@pytest.mark.parametrize("spool_memory", [0, 256 * 1024], ids=["spool_file", "spool_memory"])
async def test_reset_after_dot_never_leaves_a_partial_file_in_new(
    tmp_path: Path, spool_memory: int
) -> None:
    gw, port = await _gateway(tmp_path, **{"server.spool_memory": spool_memory})
    sent = {}
    try:
        for i in range(ROUNDS):
            body = _body(i, 2000)  # about 70 kB: writing it takes a while
            sent[i] = body
            await asyncio.to_thread(_send_and_reset, port, body, _pause(i))
        await _settled(gw)
    finally:
        await gw.stop(grace=5)
    root = tmp_path / "Maildir"
    new = sorted((root / "new").iterdir()) if (root / "new").exists() else []
    assert not (root / "tmp").exists() or list((root / "tmp").iterdir()) == []
    for f in new:
        data = f.read_bytes()
        head, sep, rest = data.partition(b"\nFrom: a@b.test\n")
        assert sep, f"{f.name}: message content missing ({len(data)} bytes)"
        assert head.startswith(b"Return-Path: <a@b.test>\nDelivered-To: bob@example.test\n")
        round_ = int(rest.split(b"\n", 1)[0].removeprefix(b"Subject: round "))
        expected = sent[round_].replace(b"\r\n", b"\n")
        assert sep[1:] + rest == expected, f"{f.name}: not what was sent (round {round_})"
    print(f"{len(new)} of {ROUNDS} messages delivered after the client reset")


async def test_reset_after_dot_downstream_gets_whole_messages_only(tmp_path: Path) -> None:
    """The same through the pooled downstream client: the spool is not freed under it."""
    down = await FakeDownstream().start()
    try:
        gw, port = await _gateway(
            tmp_path,
            **{"server.spool_memory": 0, "relay.downstream": f"127.0.0.1:{down.port}"},
        )
        sent = {}
        try:
            for i in range(ROUNDS // 2):
                sent[i] = _body(i, 2000)
                await asyncio.to_thread(_send_and_reset, port, sent[i], _pause(i))
            await _settled(gw)
        finally:
            await gw.stop(grace=5)
    finally:
        await down.stop()
    for content in down.messages:
        _, sep, rest = content.partition(b"\r\nFrom: a@b.test\r\n")
        assert sep, f"message content missing ({len(content)} bytes)"
        round_ = int(rest.split(b"\r\n", 1)[0].removeprefix(b"Subject: round "))
        assert sep[2:] + rest == sent[round_]


async def _until(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while not condition() and loop.time() < deadline:
        await asyncio.sleep(0.01)
    assert condition(), what


async def test_the_session_is_freed_only_when_its_delivery_ends(tmp_path: Path) -> None:
    """The delivery goes on after the reset and keeps the session's place meanwhile."""
    down = await FakeDownstream(command_delay=0.3).start()  # each MAIL/RCPT/DATA waits
    try:
        gw, port = await _gateway(tmp_path, **{"relay.downstream": f"127.0.0.1:{down.port}"})
        try:
            body = _body(0, 10)
            await asyncio.to_thread(_send_and_reset, port, body, 0.0)
            [session] = gw.sessions
            await _until(lambda: session._lost is not None, "the reset was not seen")
            assert session in gw.sessions and down.messages == []  # delivery still running
            await _settled(gw)
        finally:
            await gw.stop(grace=5)
    finally:
        await down.stop()
    [content] = down.messages
    assert content.endswith(body)


async def test_a_reset_during_the_message_checks_delivers_nothing(tmp_path: Path) -> None:
    """Before delivery took the message (the `message` stage still runs), a reset cancels the
    transaction: nothing is delivered, and the session is freed once the check has ended."""
    from mailmoat.policy.base import Check

    started = asyncio.Event()
    cancelled: list[bool] = []

    class SlowCheck(Check):
        name = "slow"

        async def message(self, client: Any, message: Any) -> None:
            started.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.mailmoat.test",
            "domains.local": ["example.test"],
            "maildir.path": str(tmp_path / "Maildir"),
            "dns.checks": False,
        },
    )
    gw = Gateway(settings, checks=[SlowCheck()])
    port = (await gw.start())[0][1]
    try:
        sender = asyncio.ensure_future(asyncio.to_thread(_send_and_reset, port, _body(0, 10), 0.0))
        await asyncio.wait_for(started.wait(), 15)
        await sender
        await _settled(gw)
    finally:
        await gw.stop(grace=5)
    assert cancelled == [True]
    new = tmp_path / "Maildir" / "new"
    assert not new.exists() or list(new.iterdir()) == []
