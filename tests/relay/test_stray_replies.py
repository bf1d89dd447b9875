"""A downstream reply that was not asked for is a protocol violation, never a verdict: one that
arrives before the final dot was written, or more replies than commands sent, gives the client
451 and the connection is discarded (not returned to the pool)."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat.relay.client_errors import ProtocolViolation
from mailmoat.relay.downstream import DownstreamDelivery
from mailmoat.relay.smtp_client import DownstreamClient
from tests.relay.relay_support import FakeFactory, MessageFactory, SettingsFactory
from tests.support.dns_gateway import captured_logs
from tests.support.fake_downstream import FakeDownstream

BIG = b"Subject: big\r\n\r\n" + b"".join(
    b"%06d the quick brown fox jumps over the lazy dog\r\n" % i for i in range(60_000)
)  # ~3 MB: the client is still writing when the stray reply comes


IDLE = 600.0
"""relay.idle_timeout for the tests of a pooled connection that speaks: the pool's idle
reaper would close it too, so it must not be what the test sees."""


async def _until(condition: object, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition() and loop.time() < deadline:  # type: ignore[operator]
        await asyncio.sleep(0.01)
    assert condition(), "condition not met in time"  # type: ignore[operator]


async def _refused_as_violation(
    fake: FakeDownstream, settings_port: DownstreamDelivery, message: object
) -> None:
    d = settings_port
    result = await d.deliver(message)  # type: ignore[arg-type]
    assert not result.accepted
    assert (result.reply.code, result.reply.enhanced) == (451, "4.5.0"), result
    await _until(lambda: d.pool.open == 0)  # discarded, not kept idle


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_250_right_after_354_then_451_gives_451(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    pipelining: bool,
) -> None:
    fake = await fake_downstream(
        extensions=("PIPELINING",) if pipelining else (),
        data=lambda: b"354 go ahead\r\n250 2.0.0 queued (a lie)\r\n",
        end=lambda accepted: b"451 4.3.0 the real answer\r\n",
    )
    d = DownstreamDelivery(make_settings(fake.port))
    await _refused_as_violation(fake, d, make_message())
    await d.close()


async def test_250_while_the_message_is_being_written_gives_451(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(
        on_data="stray", end=lambda accepted: b"451 4.3.0 the real answer\r\n"
    )
    d = DownstreamDelivery(make_settings(fake.port))
    await _refused_as_violation(fake, d, make_message(BIG, memory_limit=64 * 1024))
    assert "stray" in fake.events
    await d.close()


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
async def test_extra_reply_after_rcpt_gives_451_and_no_message(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    pipelining: bool,
) -> None:
    fake = await fake_downstream(
        extensions=("PIPELINING",) if pipelining else (),
        rcpt=lambda addr: b"250 2.1.5 Ok\r\n250 2.1.5 Ok again\r\n",
    )
    d = DownstreamDelivery(make_settings(fake.port))
    await _refused_as_violation(fake, d, make_message())
    assert fake.messages == []
    await d.close()


async def test_reply_beyond_the_greeting_is_a_violation(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """A reply sent before the client wrote anything: it would be taken for the EHLO reply."""
    fake = await fake_downstream(greeting=b"220 fake.test ESMTP\r\n250 2.0.0 Ok\r\n")
    with pytest.raises(ProtocolViolation):
        await DownstreamClient.connect(make_settings(fake.port))
    d = DownstreamDelivery(make_settings(fake.port))
    await _refused_as_violation(fake, d, make_message())
    assert fake.messages == []
    await d.close()


async def test_unsolicited_reply_on_an_idle_pooled_connection_discards_it(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port, idle_timeout=IDLE))
    assert (await d.deliver(make_message())).accepted
    assert (d.pool.idle, fake.connections) == (1, 1)
    for w in list(fake.writers):
        w.write(b"250 2.0.0 Ok: queued as NOTHING\r\n")  # while idle: nobody asked
    await _until(lambda: fake.concurrent == 0)  # dropped as soon as it spoke
    result = await d.deliver(make_message(b"Subject: second\r\n\r\nx\r\n"))
    assert result.accepted, result
    assert fake.connections == 2 and len(fake.messages) == 2  # not reused later
    assert d.pool.open == 1
    await d.close()


async def test_half_a_reply_while_idle_also_discards_it(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port, idle_timeout=IDLE))
    assert (await d.deliver(make_message())).accepted
    for w in list(fake.writers):
        w.write(b"25")
    await _until(lambda: fake.concurrent == 0)
    assert (await d.deliver(make_message())).accepted
    assert fake.connections == 2
    assert d.pool.open == 1
    await d.close()


async def test_the_greeting_is_owed_from_the_first_byte() -> None:
    """A downstream greets at once, and the greeting can reach the protocol before
    `create_connection` returns to the client (uvloop delivers it in the same loop turn): it
    is owed from the start, never a stray reply (it made legitimate mail get 451 4.5.0)."""
    from mailmoat.relay.reply_reader import ReplyReader

    proto = ReplyReader()
    proto.data_received(b"220 sink.test ESMTP\r\n")
    assert proto.error is None
    assert [r.code for r in proto.replies] == [220]
    proto.data_received(b"250 stray\r\n")  # nothing else is owed until a command is written
    assert proto.error is not None and "unsolicited" in str(proto.error)


async def _early_verdict_server(
    done: asyncio.Event, gone: asyncio.Event
) -> tuple[asyncio.Server, int]:
    """A downstream that answers 250 to the end of data as soon as the first bytes of the
    message arrive, reads the rest, and only then gives its real answer, 451. `gone` is set
    when the client has dropped the connection."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 early.test ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb == b"EHLO":
                    writer.write(b"250-early.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 go\r\n")
                    await reader.readexactly(10)
                    writer.write(b"250 2.0.0 queued (too early)\r\n")
                    await writer.drain()
                    await reader.readuntil(b"\r\n.\r\n")
                    await asyncio.sleep(0.2)
                    writer.write(b"451 4.3.0 not stored after all\r\n")
                    await writer.drain()
                    done.set()
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    break
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            gone.set()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_a_reply_after_the_verdict_is_logged_with_the_message(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """A server that answers before it has the whole message cannot be told from an honest one
    when its whole message fits in the socket buffers: the client gets its 250. What the
    server says after that verdict is never lost silently: an error line names the message
    and the later reply, so the administrator can find a message that may be lost."""
    done, gone = asyncio.Event(), asyncio.Event()
    server, port = await _early_verdict_server(done, gone)
    d = DownstreamDelivery(make_settings(port, idle_timeout=IDLE))
    try:
        with captured_logs() as logs:
            result = await d.deliver(make_message(queue_id="4Qearly1"))
            await asyncio.wait_for(done.wait(), 10)
            await _until(lambda: logs.of("downstream replied after its verdict"))
        [line] = logs.of("downstream replied after its verdict")
        assert result.accepted
        assert line["message"].startswith("4Qearly1 250 2.0.0 queued (too early)"), line
        assert line["reply"].startswith("451 4.3.0 not stored after all"), line
        await asyncio.wait_for(gone.wait(), 10)  # the connection is dropped, not reused
    finally:
        await d.close()
        server.close()
        await server.wait_closed()
