"""The downstream client: dot-stuffing, EHLO/LHLO, pipelining, STARTTLS, what goes on the wire."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailmoat.relay.client_errors import (
    DownstreamTimeout,
    InternalError,
    ProtocolViolation,
    TLSFailed,
)
from mailmoat.relay.message_writer import DotStuffer, check_quoting, envelope_address, stuff
from mailmoat.relay.reply_reader import abort_transport, close_transport
from mailmoat.relay.smtp_client import WRITE_BATCH, DownstreamClient
from tests.relay.relay_support import (
    TRACE,
    AiosmtpdFactory,
    FakeFactory,
    MessageFactory,
    SettingsFactory,
    TLSFiles,
)
from tests.support.waiting import wait_for


def unstuff(wire: bytes) -> bytes:
    """What a receiving server does (RFC 5321 §4.5.2), for wire data ending in CRLF.CRLF."""
    assert wire.endswith(b".\r\n") and (wire == b".\r\n" or wire.endswith(b"\r\n.\r\n"))
    body = wire[:-3]
    lines = body[:-2].split(b"\r\n") if body else []
    for line in lines:
        assert line != b".", "an unstuffed lone dot would end the data early"
    return b"".join((ln[1:] if ln[:1] == b"." else ln) + b"\r\n" for ln in lines)


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b""], b".\r\n"),
        ([b".\r\n"], b"..\r\n.\r\n"),
        ([b"a\r\n.b\r\n..\r\n"], b"a\r\n..b\r\n...\r\n.\r\n"),
        ([b"a\r\n", b".b\r\n"], b"a\r\n..b\r\n.\r\n"),  # dot at a chunk boundary
        ([b"a\r", b"\n.b\r\n"], b"a\r\n..b\r\n.\r\n"),  # CR and LF in different chunks
        ([b"a.b\r\n", b"c"], b"a.b\r\nc\r\n.\r\n"),  # missing final CRLF is added
        ([b"no newline at all"], b"no newline at all\r\n.\r\n"),
    ],
)
def test_dot_stuffing_examples(chunks: list[bytes], wire: bytes) -> None:
    assert stuff(iter(chunks)) == wire


lines_st = st.lists(
    st.sampled_from([b"", b".", b"..", b".x", b"x.", b"x", b"\t.", b" ", b"...."]), max_size=30
)


@given(lines=lines_st, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_dot_stuffing_round_trips_whatever_the_chunking(
    lines: list[bytes], cuts: list[int]
) -> None:
    message = b"".join(line + b"\r\n" for line in lines)
    points = sorted({min(c, len(message)) for c in cuts})
    chunks = [message[a:b] for a, b in zip([0, *points], [*points, len(message)], strict=True)]
    s = DotStuffer()
    wire = b"".join(s.feed(c) for c in chunks) + s.end()
    assert unstuff(wire) == message


async def test_ehlo_learns_extensions(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory
) -> None:
    port, _ = await aiosmtpd_server()
    client = await DownstreamClient.connect(make_settings(port))
    try:
        assert {"SIZE", "8BITMIME", "SMTPUTF8"} <= client.extensions.keys()
        assert client.extensions["SIZE"].isdigit()
        assert "PIPELINING" not in client.extensions and not client.tls
        assert client.usable
    finally:
        await client.close()
    assert not client.usable


async def test_lmtp_says_lhlo(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory
) -> None:
    port, _ = await aiosmtpd_server(lmtp=True)  # aiosmtpd's LMTP answers 500 to EHLO
    client = await DownstreamClient.connect(make_settings(port, protocol="lmtp"))
    assert client.lmtp and "8BITMIME" in client.extensions
    await client.close()


async def test_pipelined_envelope_goes_out_in_one_write(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    client = await DownstreamClient.connect(make_settings(fake.port))
    msg = make_message(b"hi\r\n", rcpts=["b@example.net", "c@example.net"], body="8BITMIME")
    tx = await client.send(msg)
    await client.close()
    assert [r.code for r in tx.end] == [250]
    commands = (
        b"MAIL FROM:<alice@example.org> SIZE=%d BODY=8BITMIME\r\n"
        b"RCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n" % msg.size
    )
    assert commands in fake.reads  # one write, which on loopback arrives in one read
    assert fake.messages == [TRACE + b"hi\r\n"]


class WriteSpy:
    """A transport that records each write (writelines counts as one: one send)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.inner.write(data)

    def writelines(self, data: Iterable[bytes]) -> None:
        parts = list(data)
        self.writes.append(b"".join(parts))
        self.inner.writelines(parts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("size", [10 * 1024, 3 * WRITE_BATCH])
async def test_message_goes_out_in_as_few_writes_as_possible(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    size: int,
) -> None:
    fake = await fake_downstream()
    client = await DownstreamClient.connect(make_settings(fake.port))
    spy = WriteSpy(client._transport)
    client._transport = spy  # type: ignore[assignment]
    content = (b".dot line\r\n" + b"x" * 86 + b"\r\n") * (size // 100)
    tx = await client.send(make_message(content))
    envelope, *data = spy.writes
    await client.close()
    assert [r.code for r in tx.end] == [250]
    assert fake.messages == [TRACE + content]
    assert envelope.endswith(b"DATA\r\n")
    assert b"".join(data) == stuff(iter([TRACE, content]))
    # trace, content and the final dot together, in batches of about WRITE_BATCH octets
    assert len(data) == 1 + size // (WRITE_BATCH + 1)


async def test_a_downstream_that_stops_reading_times_out(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    fake = await fake_downstream()
    client = await DownstreamClient.connect(make_settings(fake.port, command_timeout=0.2))
    proto = client._proto
    proto.pause_writing()  # as the transport does when its buffer passes the high-water mark
    asyncio.get_running_loop().call_later(0.05, proto.resume_writing)
    proto.owed += 2  # the server answers each NOOP
    await client._write(b"NOOP\r\n")  # waits until the buffer drained
    proto.pause_writing()
    started = time.monotonic()
    with pytest.raises(DownstreamTimeout):
        await client._write(b"NOOP\r\n")
    assert time.monotonic() - started >= 0.2 - 0.01  # command_timeout, not before
    assert not client.usable  # a connection in doubt is never reused
    await client.close()


async def test_without_pipelining_each_command_waits_for_its_reply(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(extensions=("8BITMIME",), command_delay=0.05)
    client = await DownstreamClient.connect(make_settings(fake.port))
    tx = await client.send(make_message(rcpts=["b@example.net", "c@example.net"]))
    await client.close()
    assert tx.end[0].code == 250
    # while the server sat on each command, the client had sent nothing further
    assert fake.events == [
        "wait MAIL",
        "reply MAIL (buffered 0)",
        "wait RCPT",
        "reply RCPT (buffered 0)",
        "wait RCPT",
        "reply RCPT (buffered 0)",
        "wait DATA",
        "reply DATA (buffered 0)",
    ]
    assert b"MAIL FROM:<alice@example.org>" in fake.lines  # no SIZE= when SIZE not offered


async def test_starttls_required_and_verified(
    aiosmtpd_server: AiosmtpdFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    tls_files: TLSFiles,
) -> None:
    port, rec = await aiosmtpd_server(tls_context=tls_files.server_context())
    settings = make_settings(port, starttls="require", tls_ca_file=str(tls_files.cert))
    client = await DownstreamClient.connect(settings)
    assert client.tls and "STARTTLS" not in client.extensions  # EHLO again after TLS
    tx = await client.send(make_message(b"secret\r\n"))
    await client.close()
    assert tx.end[0].code == 250
    assert rec.messages[0].content == TRACE + b"secret\r\n"


async def test_starttls_verification_failure(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, tls_files: TLSFiles
) -> None:
    port, _ = await aiosmtpd_server(tls_context=tls_files.server_context())
    # self-signed certificate, system CA store: must not verify
    with pytest.raises(TLSFailed) as info:
        await DownstreamClient.connect(make_settings(port, starttls="opportunistic"))
    assert (info.value.reply.code, info.value.reply.enhanced) == (451, "4.7.5")


async def test_starttls_opportunistic_without_verification(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, tls_files: TLSFiles
) -> None:
    port, _ = await aiosmtpd_server(tls_context=tls_files.server_context())
    settings = make_settings(port, starttls="opportunistic", tls_verify=False)
    client = await DownstreamClient.connect(settings)
    assert client.tls
    await client.close()


async def test_tls_connection_closed_by_downstream_closes_and_aborts_cleanly(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, tls_files: TLSFiles
) -> None:
    """A TLS connection the downstream already closed (an idle timeout here) can still be
    closed and aborted: on CPython 3.11.2 (Debian 12) closing such an SSL transport detaches its
    SSL protocol and abort() then raised AttributeError out of close() and the pool."""
    port, _ = await aiosmtpd_server(tls_context=tls_files.server_context(), idle_timeout=0.3)
    settings = make_settings(port, starttls="require", tls_verify=False)
    client = await DownstreamClient.connect(settings)
    assert client.tls
    await wait_for(lambda: not client.usable, "downstream closing the idle TLS connection")
    await client.close()
    client.abort()  # what the pool does to a connection it finds dead
    await client.close()
    assert not client.usable


async def test_a_detached_tls_transport_closes_and_aborts_quietly(tls_files: TLSFiles) -> None:
    """The root of the case above: on CPython 3.11.2 a second close() detaches an SSL transport
    from its SSL protocol, and its abort() then raises AttributeError."""

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0, ssl=tls_files.server_context())
    try:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
        transport = writer.transport
        transport.close()
        transport.close()  # detaches it (3.11.2)
        close_transport(transport)
        abort_transport(transport)
        assert transport.is_closing()
    finally:
        server.close()
        await server.wait_closed()


async def test_starttls_not_offered(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory
) -> None:
    port, _ = await aiosmtpd_server()
    client = await DownstreamClient.connect(make_settings(port, starttls="opportunistic"))
    assert not client.tls  # opportunistic: plaintext is fine
    await client.close()
    with pytest.raises(TLSFailed):
        await DownstreamClient.connect(make_settings(port, starttls="require"))


async def test_starttls_plaintext_injection_is_refused(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    fake = await fake_downstream(
        extensions=("STARTTLS",), starttls=b"220 2.0.0 go ahead\r\n250 injected\r\n"
    )
    with pytest.raises(ProtocolViolation):
        await DownstreamClient.connect(make_settings(fake.port, starttls="require"))


def test_tls_context_honours_settings(make_settings: SettingsFactory, tls_files: TLSFiles) -> None:
    from mailmoat.relay.smtp_client import make_tls_context

    strict = make_tls_context(make_settings(tls_ca_file=str(tls_files.cert)).relay)
    assert strict.verify_mode == ssl.CERT_REQUIRED and strict.check_hostname
    lax = make_tls_context(make_settings(tls_verify=False).relay)
    assert lax.verify_mode == ssl.CERT_NONE and not lax.check_hostname


@given(st.text(alphabet=st.sampled_from('ab@.<> "\\\r\n\x00\x7f\t\u00e9'), max_size=12))
def test_envelope_address_check_skips_only_what_needs_no_look(address: str) -> None:
    def full(a: str) -> bytes | None:  # the quoting check run on every address
        try:
            check_quoting(a)
            return a.encode("utf-8")
        except InternalError:
            return None

    try:
        got: bytes | None = envelope_address(address, utf8=True)
    except InternalError:
        got = None
    assert got == full(address)
