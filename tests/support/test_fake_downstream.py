"""The fake downstream counts what the benchmarks read from it, with or without recording."""

from __future__ import annotations

import pytest

from tests.support.fake_downstream import FakeDownstream
from tests.support.talk import Talk


async def send(port: int, *rcpts: str) -> bytes:
    talk = await Talk.open(port)
    try:
        await talk.command("EHLO client.test")
        await talk.command("MAIL FROM:<a@sender.test>")
        for rcpt in rcpts:
            await talk.command(f"RCPT TO:<{rcpt}>")
        await talk.command("DATA")
        return await talk.command("Subject: x\r\n\r\n..line\r\n.")  # dot-stuffed
    finally:
        await talk.close()


@pytest.mark.parametrize("record", [True, False])
async def test_counts_messages_recipients_and_connections(record: bool) -> None:
    sink = await FakeDownstream(record=record).start()
    try:
        held = await Talk.open(sink.port)
        assert (await send(sink.port, "alice@example.test", "Bob@example.test")).startswith(b"250")
        assert (await send(sink.port, "alice@example.test")).startswith(b"250")
        assert sink.delivered == 2
        assert sink.recipients == {"alice@example.test": 2, "Bob@example.test": 1}
        assert sink.max_concurrent == 2
        await held.command("QUIT")
        await held.close()
        sink.reset_peak()
        assert sink.max_concurrent == sink.concurrent == 0
        if record:
            assert sink.messages == [b"Subject: x\r\n\r\n.line\r\n"] * 2
        else:
            assert (sink.messages, sink.lines, sink.reads) == ([], [], [])
    finally:
        await sink.stop()
