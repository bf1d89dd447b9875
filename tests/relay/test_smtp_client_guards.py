"""The downstream client's edges that mutation testing (scripts/mutation over
relay/smtp_client.py, message_writer.py, client_errors.py) found no fixed test holding: the
call-ahead probe (never DATA, always RSET, exact commands on the wire), and the code and text
each client error gives the sender."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable

import pytest

from mailmoat.config import build
from mailmoat.relay.client_errors import (
    ConnectFailed,
    ConnectionLost,
    DownstreamError,
    DownstreamRefused,
    DownstreamTimeout,
    InternalError,
    ProtocolViolation,
    StaleConnection,
    TLSFailed,
    Unsupported,
)
from mailmoat.relay.reply_reader import ReplyReader
from mailmoat.relay.smtp_client import DownstreamClient
from tests.relay.relay_support import FakeFactory, MessageFactory, SettingsFactory, TLSFiles
from tests.support.waiting import wait_for


@pytest.mark.parametrize("accept", [b"250 ok\r\n", b"200 ok\r\n", b"299 ok\r\n"])
async def test_a_probe_says_mail_and_rcpt_then_rset_and_never_data(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, accept: bytes
) -> None:
    """Every 2xx to MAIL is an accept (200 and 299 are at the edges)."""
    fake = await fake_downstream(
        mail=lambda: accept,
        rcpt=lambda addr: b"550 5.1.1 no such user\r\n" if addr.startswith("x") else b"250 ok\r\n",
    )
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        mail, rcpt = await client.probe("alice@example.org", "bob@example.net")
        assert (mail.code, rcpt and rcpt.code) == (int(accept[:3]), 250)
        mail, rcpt = await client.probe("alice@example.org", "xavier@example.net")
        assert rcpt is not None and (rcpt.code, rcpt.enhanced) == (550, "5.1.1")
        assert client.usable  # out of its transaction again, reusable
    finally:
        await client.close()
    assert fake.lines[1:-1] == [
        b"MAIL FROM:<alice@example.org>",
        b"RCPT TO:<bob@example.net>",
        b"RSET",
        b"MAIL FROM:<alice@example.org>",
        b"RCPT TO:<xavier@example.net>",
        b"RSET",
    ]
    assert fake.delivered == 0 and fake.messages == []


@pytest.mark.parametrize("answer", [b"451 4.3.0 later\r\n", b"300 odd\r\n"])
async def test_a_probe_whose_mail_is_refused_sends_no_rcpt(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, answer: bytes
) -> None:
    """Only a 2xx to MAIL is an accept (a 3xx is no completion)."""
    fake = await fake_downstream(mail=lambda: answer)
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        mail, rcpt = await client.probe("alice@example.org", "bob@example.net")
    finally:
        await client.close()
    assert (mail.code, rcpt) == (int(answer[:3]), None)
    assert fake.lines[1:-1] == [b"MAIL FROM:<alice@example.org>", b"RSET"]


async def test_a_utf8_probe_says_smtputf8_when_offered(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    fake = await fake_downstream(extensions=("PIPELINING", "SMTPUTF8"))
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        mail, rcpt = await client.probe("alice@example.org", "jörg@example.net")
    finally:
        await client.close()
    assert (mail.code, rcpt and rcpt.code) == (250, 250)
    assert fake.lines[1:4] == [
        b"MAIL FROM:<alice@example.org> SMTPUTF8",
        "RCPT TO:<jörg@example.net>".encode(),
        b"RSET",
    ]


@pytest.mark.parametrize(("sender", "recipient"), [("a@example.org", "jörg@example.net")])
async def test_a_utf8_probe_without_smtputf8_is_a_4xx_and_sends_nothing(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, sender: str, recipient: str
) -> None:
    fake = await fake_downstream(extensions=("PIPELINING",))
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        with pytest.raises(Unsupported) as caught:
            await client.probe(sender, recipient)
        assert (caught.value.reply.code, caught.value.reply.enhanced) == (451, "4.6.7")
        assert client.usable
    finally:
        await client.close()
    assert fake.lines[1:] == [b"QUIT"]


async def test_a_421_to_mail_is_an_answer_on_a_new_connection_and_stale_on_a_reused_one(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """Only a reused connection may be 'stale' (retried at once on a new one): a new connection
    whose server says 421 gives that answer, and nothing is retried behind the sender's back."""
    closing = b"421 4.3.2 closing\r\n"
    answers = iter([b"250 2.1.0 Ok\r\n", b"550 5.7.1 not you\r\n", closing, closing])
    fake = await fake_downstream(mail=lambda: next(answers), extensions=("8BITMIME",))
    settings = make_settings(fake.port)
    client = await DownstreamClient.connect(settings)
    try:
        assert [r.code for r in (await client.send(make_message())).end] == [250]
        refused = await client.send(make_message())  # reused, refused: an answer, not stale
        assert (refused.mail.code, refused.rcpts, refused.data) == (550, [None], None)
        with pytest.raises(StaleConnection):
            await client.send(make_message())  # reused: the server closed it meanwhile
    finally:
        await client.close()
    fresh = await DownstreamClient.connect(settings)
    try:
        tx = await fresh.send(make_message())
    finally:
        await fresh.close()
    assert (tx.mail.code, tx.rcpts, tx.data, tx.end) == (421, [None], None, [])
    assert fake.delivered == 1
    assert fake.lines.count(b"RSET") == 1  # after the refused MAIL only


async def test_a_connection_whose_transport_is_closing_is_not_usable() -> None:
    """Between a close() and the connection_lost that follows it, nothing may take the
    connection for an idle, healthy one."""
    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        transport, reader = await loop.connect_accepted_socket(ReplyReader, ours)
        reader.owed = 0  # no greeting owed on this pair
        client = DownstreamClient(build({}), transport, reader)
        assert client.usable
        transport.close()
        assert not client.usable
        await asyncio.wait_for(reader.lost, 10)
    finally:
        theirs.close()


async def test_starttls_refused_fails_a_required_connection_before_any_mail(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    """`starttls = "require"`: a server that offers STARTTLS but answers it 454 gets no mail in
    plaintext; the sender gets a 4xx (the message is kept for later)."""
    fake = await fake_downstream(extensions=("STARTTLS",), starttls=b"454 4.7.0 not now\r\n")
    with pytest.raises(TLSFailed) as caught:
        await DownstreamClient.connect(make_settings(fake.port, starttls="require"))
    assert (caught.value.reply.code, caught.value.reply.enhanced) == (451, "4.7.5")
    assert [line.split(b" ")[0] for line in fake.lines] == [b"EHLO", b"STARTTLS"]


async def test_starttls_refused_carries_on_in_plaintext_when_opportunistic(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(extensions=("STARTTLS",), starttls=b"454 4.7.0 not now\r\n")
    client = await DownstreamClient.connect(make_settings(fake.port, starttls="opportunistic"))
    try:
        assert not client.tls
        tx = await client.send(make_message(b"hi\r\n"))
    finally:
        await client.close()
    assert [r.code for r in tx.end] == [250] and fake.delivered == 1


async def test_a_server_without_esmtp_is_greeted_with_helo_and_has_no_extensions(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """RFC 5321 3.2: EHLO refused with a 5xx, the client falls back to HELO (and so sends no
    SIZE, BODY or pipelined commands)."""
    fake = await fake_downstream(ehlo=b"502 5.5.2 what is EHLO?\r\n")
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        assert client.extensions == {}
        tx = await client.send(make_message(b"hi\r\n"))
    finally:
        await client.close()
    assert [r.code for r in tx.end] == [250] and fake.delivered == 1
    assert fake.lines[:3] == [b"EHLO gw.test", b"HELO gw.test", b"MAIL FROM:<alice@example.org>"]


async def test_a_server_refusing_ehlo_and_helo_fails_the_connection_before_any_mail(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    """The HELO fallback refused too: no MAIL is sent, the connection fails (the sender gets a
    4xx, the message is kept)."""
    fake = await fake_downstream(ehlo=b"502 5.5.2 what is EHLO?\r\n", helo=b"554 5.7.1 not you\r\n")
    with pytest.raises(DownstreamRefused):
        await DownstreamClient.connect(make_settings(fake.port))
    assert fake.lines[:2] == [b"EHLO gw.test", b"HELO gw.test"]
    assert not any(line.startswith(b"MAIL") for line in fake.lines)


async def test_the_ehlo_greeting_line_is_no_extension(
    fake_downstream: FakeFactory, make_settings: SettingsFactory
) -> None:
    """The first line of the EHLO reply is the server's name and greeting (RFC 5321 4.1.1.1),
    whatever it says; the keywords are on the lines after it."""
    fake = await fake_downstream(ehlo=b"250-STARTTLS says hello\r\n250 SIZE 1000\r\n")
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        assert client.extensions == {"SIZE": "1000"}
    finally:
        await client.close()


@pytest.mark.parametrize("greeting", [b"211 status\r\n", b"214 help\r\n", b"554 go away\r\n"])
async def test_a_greeting_other_than_220_is_a_refusal(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, greeting: bytes
) -> None:
    fake = await fake_downstream(greeting=greeting)
    with pytest.raises(DownstreamRefused):
        await DownstreamClient.connect(make_settings(fake.port))
    assert fake.lines == []


async def test_each_message_delivered_counts_once_for_the_pool(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """`transactions` is what the pool compares with `relay.max_messages` to retire a
    connection."""
    fake = await fake_downstream()
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        for n in (1, 2):
            tx = await client.send(make_message(b"hi\r\n"))
            assert [r.code for r in tx.end] == [250]
            assert client.transactions == n
    finally:
        await client.close()
    assert fake.delivered == 2


async def test_starttls_off_never_starts_tls_even_when_offered(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(extensions=("STARTTLS",))
    client = await DownstreamClient.connect(make_settings(fake.port, starttls="off"))
    try:
        assert not client.tls
        await client.send(make_message(b"hi\r\n"))
    finally:
        await client.close()
    assert b"STARTTLS" not in fake.lines and fake.delivered == 1


async def test_a_message_of_exactly_the_downstream_size_limit_is_sent(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """RFC 1870: SIZE is the largest message the server takes; only a larger one is refused
    before MAIL."""
    message = make_message(b"hi\r\n")
    fake = await fake_downstream(extensions=(f"SIZE {message.size}",))
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        tx = await client.send(message)
    finally:
        await client.close()
    assert [r.code for r in tx.end] == [250] and fake.delivered == 1


@pytest.mark.parametrize("off", [1, -1])
async def test_a_message_read_back_at_another_size_never_gets_its_final_dot(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    off: int,
) -> None:
    """The spool says the message has `off` octets more (or fewer) than it gives back, as a
    truncated spool file would: no end of data is written (a truncated message must never be
    delivered), the connection is dropped, and the sender gets a 4xx."""
    fake = await fake_downstream()
    client = await DownstreamClient.connect(make_settings(fake.port))
    msg = make_message(b"Subject: x\r\n\r\n" + b"line\r\n" * 100)
    msg.spool.size += off
    try:
        with pytest.raises(InternalError) as caught:
            await client.send(msg)
        assert caught.value.reply.code == 451
        assert not client.usable
    finally:
        await client.close()
    await wait_for(lambda: fake.concurrent == 0, "the downstream to see the connection dropped")
    assert fake.delivered == 0 and fake.messages == []


async def test_a_354_after_a_refused_pipelined_recipient_gets_nothing_but_a_hang_up(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """The server waits for message text though a recipient was refused: whatever the client
    wrote now would be message text (".": an empty message delivered; "RSET": a line of
    it). The client writes nothing more and drops the connection."""
    after_data = bytearray()
    hung_up = asyncio.Event()

    async def server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 raw.test\r\n")
        try:
            while line := await reader.readline():
                if line.startswith(b"EHLO"):
                    writer.write(b"250-raw.test\r\n250 PIPELINING\r\n")
                elif line.startswith(b"RCPT TO:<x"):
                    writer.write(b"550 5.1.1 no such user\r\n")
                elif line.startswith((b"MAIL", b"RCPT")):
                    writer.write(b"250 ok\r\n")
                elif line == b"DATA\r\n":
                    writer.write(b"354 go ahead\r\n")
                    while chunk := await reader.read(65536):
                        after_data.extend(chunk)
                    break
        except ConnectionError:
            pass
        finally:
            hung_up.set()
            writer.close()

    listener = await asyncio.start_server(server, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        client = await DownstreamClient.connect(make_settings(port))
        try:
            tx = await client.send(make_message(rcpts=["a@example.net", "x@example.net"]))
            assert [r and r.code for r in tx.rcpts] == [250, 550]
            assert tx.data is not None and tx.data.code == 354 and tx.end == []
            assert not client.usable
        finally:
            await client.close()
        await asyncio.wait_for(hung_up.wait(), 10)
    finally:
        listener.close()
        await listener.wait_closed()
    assert bytes(after_data) == b""


async def test_a_refused_mail_without_pipelining_sends_no_rcpt_and_no_data(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(mail=lambda: b"550 5.7.1 not you\r\n", extensions=("8BITMIME",))
    client = await DownstreamClient.connect(make_settings(fake.port))
    try:
        tx = await client.send(make_message(rcpts=["b@example.net", "c@example.net"]))
        assert client.usable  # reset, and reusable
    finally:
        await client.close()
    assert (tx.mail.code, tx.rcpts, tx.data, tx.end) == (550, [None, None], None, [])
    assert [line.split(b" ")[0] for line in fake.lines[1:]] == [b"MAIL", b"RSET", b"QUIT"]


@pytest.mark.parametrize(
    ("error", "enhanced"),
    [
        (ConnectFailed, "4.4.1"),
        (DownstreamRefused, "4.3.2"),
        (DownstreamTimeout, "4.4.2"),
        (ConnectionLost, "4.4.2"),
        (StaleConnection, "4.4.2"),
        (ProtocolViolation, "4.5.0"),
        (TLSFailed, "4.7.5"),
        (InternalError, "4.3.0"),
    ],
)
def test_every_downstream_failure_tells_the_sender_451(
    error: Callable[[str], DownstreamError], enhanced: str
) -> None:
    """Invariant 6: a dependency failure gives 4xx (the sender keeps the message and retries),
    with the enhanced code that names the failure; the detail is for the log only."""
    raised = error("detail for the log")
    assert (raised.reply.code, raised.reply.enhanced) == (451, enhanced)
    assert raised.detail == str(raised) == "detail for the log"
    assert "detail" not in raised.reply.text


@pytest.mark.parametrize("answer", [b"350 hmm\r\n", b"399 hmm\r\n"])
async def test_no_message_text_goes_out_after_a_3xx_to_data_other_than_354(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    answer: bytes,
) -> None:
    """Only 354 invites the message: after any other reply the message text would be read as
    commands (smuggling), so none is sent."""
    fake = await fake_downstream(data=lambda: answer)
    client = await DownstreamClient.connect(make_settings(fake.port, command_timeout=0.5))
    try:
        tx = await client.send(make_message(b"Subject: x\r\n\r\nhello\r\n"))
    finally:
        await client.close()
    assert tx.data is not None and tx.data.code == int(answer[:3]) and tx.end == []
    await wait_for(lambda: fake.concurrent == 0, "the downstream to see the connection end")
    assert fake.delivered == 0 and fake.messages == []


async def test_a_connection_found_dead_at_mail_is_stale_only_if_reused(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    """The server hangs up while the connection is idle: on a reused connection that is
    'stale' (nothing of the message was sent: retried at once on a new one); on a new one it
    is a lost connection (451 to the sender, no retry behind its back)."""
    fake = await fake_downstream()
    settings = make_settings(fake.port)
    for reused in (True, False):
        client = await DownstreamClient.connect(settings)
        try:
            if reused:
                assert [r.code for r in (await client.send(make_message())).end] == [250]
            fake.drop_all()
            await wait_for(lambda c=client: not c.usable, "the client to see the hang-up")
            with pytest.raises(ConnectionLost) as caught:
                await client.send(make_message())
            assert isinstance(caught.value, StaleConnection) is reused
        finally:
            await client.close()
    assert fake.delivered == 1


@pytest.mark.parametrize("answer", [b"211 2.0.0 status\r\n", b"214 2.0.0 help\r\n"])
async def test_only_220_to_starttls_starts_tls(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    answer: bytes,
) -> None:
    """RFC 3207: 220 is the go-ahead; any other answer to STARTTLS is a refusal, so an
    opportunistic client carries on in plaintext instead of starting a handshake the server
    never expects (which would defer the message)."""
    fake = await fake_downstream(extensions=("STARTTLS",), starttls=answer)
    client = await DownstreamClient.connect(make_settings(fake.port, starttls="opportunistic"))
    try:
        assert not client.tls
        tx = await client.send(make_message(b"hi\r\n"))
    finally:
        await client.close()
    assert [r.code for r in tx.end] == [250] and fake.delivered == 1


async def test_close_returns_when_a_tls_downstream_never_finishes_closing(
    make_settings: SettingsFactory, tls_files: TLSFiles
) -> None:
    """A downstream that answers QUIT, then neither closes nor answers the TLS close_notify
    (it stops reading): close() gives up after its timeout, drops the connection and returns;
    it never raises TimeoutError into the pool."""
    stopping = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"220 tls.test ESMTP\r\n")
            tls = False
            while line := await reader.readline():
                verb = line.split()[0].upper() if line.split() else b""
                if verb == b"EHLO":
                    writer.write(
                        b"250 tls.test\r\n" if tls else b"250-tls.test\r\n250 STARTTLS\r\n"
                    )
                elif verb == b"STARTTLS":
                    writer.write(b"220 2.0.0 go ahead\r\n")
                    await writer.drain()
                    await writer.start_tls(tls_files.server_context())
                    tls = True
                elif verb == b"QUIT":
                    writer.write(b"221 2.0.0 bye\r\n")
                    await writer.drain()
                    writer.transport.pause_reading()  # the close_notify is never read
                    await stopping.wait()
                    return
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        settings = make_settings(port, starttls="require", tls_verify=False)
        client = await DownstreamClient.connect(settings)
        assert client.tls and client.usable
        await client.close(0.5)
        assert not client.usable
    finally:
        stopping.set()
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("sent", [b"250 2.0.0 Ok\r\n", b"25"], ids=["reply", "half"])
async def test_a_connection_holding_an_unread_reply_is_not_usable(sent: bytes) -> None:
    """A reply (or half of one) that arrived and was not read yet, on a connection still
    open: taken for idle and healthy, the pool would reuse it and that stale reply would
    answer the next command."""
    ours, theirs = socket.socketpair()
    try:
        loop = asyncio.get_running_loop()
        transport, reader = await loop.connect_accepted_socket(ReplyReader, ours)
        reader.owed = 1  # one command written, its answer not read
        client = DownstreamClient(build({}), transport, reader)
        assert client.usable
        theirs.sendall(sent)
        await wait_for(lambda: reader.replies or reader.partial, "the bytes to arrive")
        assert not transport.is_closing() and reader.error is None
        assert not client.usable
        transport.close()
        await asyncio.wait_for(reader.lost, 10)
    finally:
        theirs.close()


@pytest.mark.parametrize("mode", ["opportunistic", "require"])
async def test_a_reply_injected_after_the_starttls_go_ahead_fails_the_connection(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, mode: str
) -> None:
    """Bytes that come in plaintext after the 220 to STARTTLS (CVE-2011-0411's injection)
    would be read as replies inside TLS: the connection fails before the handshake, in every
    mode, and no mail goes out."""
    fake = await fake_downstream(
        extensions=("STARTTLS",), starttls=b"220 2.0.0 go ahead\r\n250 2.1.0 injected\r\n"
    )
    with pytest.raises(ProtocolViolation):
        await DownstreamClient.connect(make_settings(fake.port, starttls=mode))
    assert [line.split(b" ")[0] for line in fake.lines] == [b"EHLO", b"STARTTLS"]
