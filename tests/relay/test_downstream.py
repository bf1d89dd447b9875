"""DownstreamDelivery: one DeliveryResult per message, 250 only when every recipient is in."""

from __future__ import annotations

import asyncio
import time

import pytest

from mailmoat.relay import DownstreamDelivery, MaildirDelivery, make_delivery
from mailmoat.relay.base import DeliveryResult
from tests.relay.relay_support import (
    TRACE,
    AiosmtpdFactory,
    FakeFactory,
    MessageFactory,
    SettingsFactory,
)
from tests.support.ports import free_port
from tests.support.waiting import DEADLINE, wait_for

EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""

TRICKY = (
    b"Subject: dots\r\n\r\n"
    b".\r\n"  # a lone dot: would end the data if not stuffed
    b"..two dots\r\n"
    b".leading dot\r\n"
    b"not.at.start\r\n"
    b"\r\n"
    b"."
)  # and no final CRLF: the client must add one before the end of data


def code(result: DeliveryResult) -> tuple[bool, int, str | None]:
    return result.accepted, result.reply.code, result.reply.enhanced


@pytest.mark.parametrize("pipelining", [False, True])
async def test_success_is_byte_exact_with_dot_stuffing(
    aiosmtpd_server: AiosmtpdFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    pipelining: bool,
) -> None:
    port, rec = await aiosmtpd_server(pipelining=pipelining)
    d = DownstreamDelivery(make_settings(port))
    content = TRICKY + b"\r\n"
    result = await d.deliver(make_message(content, queue_id="4QX1", body="8BITMIME"))
    await d.close()
    assert code(result) == (True, 250, "2.0.0")
    assert result.reply.text == "Ok: queued as 4QX1"
    assert "DOWN1" in result.detail  # the downstream's own words, for the log
    [m] = rec.messages
    assert m.content == TRACE + content
    assert (m.mail_from, m.rcpt_tos) == ("alice@example.org", ["bob@example.net"])
    assert "BODY=8BITMIME" in m.mail_options
    assert f"SIZE={len(TRACE + content)}" in m.mail_options


async def test_missing_final_crlf_is_added(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    port, rec = await aiosmtpd_server()
    d = DownstreamDelivery(make_settings(port))
    assert (await d.deliver(make_message(TRICKY))).accepted
    await d.close()
    assert rec.messages[0].content == TRACE + TRICKY + b"\r\n"


async def test_large_spooled_message(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    port, rec = await aiosmtpd_server(pipelining=True)
    d = DownstreamDelivery(make_settings(port))
    big = b"".join(b".%07d line with a leading dot\r\n" % i for i in range(60_000))  # ~2 MB
    result = await d.deliver(make_message(big, memory_limit=4096))
    await d.close()
    assert result.accepted
    assert rec.messages[0].content == TRACE + big


async def test_smtputf8_envelope(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    port, rec = await aiosmtpd_server()
    d = DownstreamDelivery(make_settings(port))
    msg = make_message(
        "Subject: héllo\r\n\r\nÜ\r\n".encode(),
        mail_from="jörg@exämple.org",
        rcpts=["дмитрий@пример.рф"],
        smtputf8=True,
        body="8BITMIME",
    )
    result = await d.deliver(msg)
    await d.close()
    assert result.accepted
    [m] = rec.messages
    assert (m.mail_from, m.rcpt_tos) == ("jörg@exämple.org", ["дмитрий@пример.рф"])
    assert "SMTPUTF8" in m.mail_options


async def test_lmtp_every_recipient(
    aiosmtpd_server: AiosmtpdFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    port, rec = await aiosmtpd_server(lmtp=True)
    d = DownstreamDelivery(make_settings(port, protocol="lmtp"))
    rcpts = ["a@example.net", "b@example.net", "c@example.net"]
    result = await d.deliver(make_message(rcpts=rcpts))
    await d.close()
    assert code(result) == (True, 250, "2.0.0")
    assert rec.messages[0].rcpt_tos == rcpts
    assert result.detail.count("delivered") == 3


@pytest.mark.parametrize(
    ("answers", "expected"),
    [
        ([b"250 2.0.0 ok", b"452 4.2.2 mailbox full"], (451, "4.2.2")),
        ([b"250 2.0.0 ok", b"550 5.1.1 gone"], (550, "5.1.1")),
        ([b"552 5.2.2 over quota", b"450 4.2.0 later"], (451, "4.2.0")),
        ([b"554 5.7.1 no", b"550 5.1.1 gone"], (554, "5.7.1")),
    ],
)
async def test_lmtp_mixed_end_of_data(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    answers: list[bytes],
    expected: tuple[int, str],
) -> None:
    fake = await fake_downstream(
        lmtp=True, end=lambda rcpts: b"".join(a + b"\r\n" for a in answers)
    )
    d = DownstreamDelivery(make_settings(fake.port, protocol="lmtp"))
    result = await d.deliver(make_message(rcpts=["a@example.net", "b@example.net"]))
    await d.close()
    assert code(result) == (False, *expected)
    assert b"LHLO gw.test" in fake.lines


async def test_connection_refused(
    make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    d = DownstreamDelivery(make_settings(free_port()))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 451, "4.4.1")
    assert d.pool.open == 0


async def test_no_greeting_times_out(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(greeting=None)
    # every other wait is longer than the test waits: only connect_timeout can answer
    d = DownstreamDelivery(make_settings(fake.port, connect_timeout=0.3, command_timeout=60))
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        result = await d.deliver(make_message())
    assert time.monotonic() - started >= 0.3 - EPSILON
    await d.close()
    assert code(result) == (False, 451, "4.4.2")


async def test_refusing_greeting(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(greeting=b"554 5.3.2 go away\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 451, "4.3.2")  # never a 5xx for our own server's mood


@pytest.mark.parametrize("pipelining", [False, True])
@pytest.mark.parametrize(
    ("replies", "expected"),
    [
        ({"x@example.net": "550 5.1.1 <x@example.net>: no such user"}, (550, "5.1.1")),
        ({"x@example.net": "452 4.2.2 mailbox full"}, (452, "4.2.2")),
        (  # any 4xx wins over 5xx: the sender keeps the message
            {"x@example.net": "550 5.1.1 no such user", "y@example.net": "450 4.2.1 busy"},
            (450, "4.2.1"),
        ),
        ({"x@example.net": "421 4.3.2 shutting down"}, (451, "4.3.2")),
        ({"x@example.net": "550 no enhanced code"}, (550, "5.0.0")),
    ],
)
async def test_recipient_refused_means_no_message_sent(
    aiosmtpd_server: AiosmtpdFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    pipelining: bool,
    replies: dict[str, str],
    expected: tuple[int, str],
) -> None:
    port, rec = await aiosmtpd_server(pipelining=pipelining, rcpt_replies=replies)
    d = DownstreamDelivery(make_settings(port))
    rcpts = ["ok@example.net", "x@example.net", "y@example.net"]
    result = await d.deliver(make_message(rcpts=rcpts))
    assert code(result) == (False, *expected)
    assert rec.messages == []  # nothing delivered to the recipients that were accepted
    if not pipelining:  # lockstep: RSET (not after 421: closing); pipelined: 354 came, dropped
        closing = any(v.startswith("421") for v in replies.values())
        assert rec.commands == ([] if closing else ["RSET"])
    # the connection is either reset or dropped; the next message goes through either way
    ok = await d.deliver(make_message(rcpts=["ok@example.net"]))
    await d.close()
    assert ok.accepted and len(rec.messages) == 1


async def test_all_recipients_refused_pipelined_resets_and_reuses(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(rcpt=lambda a: b"550 5.1.1 unknown\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    assert code(result) == (False, 550, "5.1.1")
    fake.rcpt = lambda a: b"250 2.1.5 ok\r\n"
    assert (await d.deliver(make_message())).accepted
    await d.close()
    assert fake.connections == 1
    assert b"RSET" in fake.lines


async def test_partial_refusal_after_pipelined_data_drops_the_connection(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(
        rcpt=lambda a: b"550 5.1.1 unknown\r\n" if a.startswith("x") else b"250 ok\r\n"
    )
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message(rcpts=["a@example.net", "x@example.net"]))
    assert code(result) == (False, 550, "5.1.1")
    assert (await d.deliver(make_message())).accepted
    await d.close()
    assert len(fake.messages) == 1  # the server never got a complete first message
    assert fake.connections == 2


async def test_downstream_text_is_sanitised(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(rcpt=lambda a: "550 5.7.1 café \x1b[31mred\r\n".encode())
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 550, "5.7.1")
    assert result.reply.to_bytes().isascii()
    assert "\x1b" not in result.reply.text and "red" in result.reply.text


async def test_mail_refused(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(mail=lambda: b"553 5.1.8 bad sender domain\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 553, "5.1.8")
    assert fake.messages == []


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("554 5.7.1 looks like spam", (554, "5.7.1")),
        ("452 4.3.1 insufficient system storage", (452, "4.3.1")),
        ("421 4.3.0 going down", (451, "4.3.0")),
    ],
)
async def test_end_of_data_refusal_is_passed_through(
    aiosmtpd_server: AiosmtpdFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    answer: str,
    expected: tuple[int, str],
) -> None:
    port, _ = await aiosmtpd_server(data_reply=answer)
    d = DownstreamDelivery(make_settings(port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, *expected)
    assert answer.split(" ", 2)[2] in result.reply.text


async def test_connection_lost_mid_data(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(on_data="close")
    d = DownstreamDelivery(make_settings(fake.port))
    big = b"x" * 998 + b"\r\n"
    result = await d.deliver(make_message(big * 3000, memory_limit=4096))
    assert code(result) == (False, 451, "4.4.2")
    small = await d.deliver(make_message())  # before the end-of-data reply, too
    await d.close()
    assert code(small) == (False, 451, "4.4.2")
    assert fake.messages == [] and d.pool.open == 0


async def test_end_of_data_never_answered(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(on_data="silent")
    # every other wait is longer than the test waits: only data_timeout can answer
    d = DownstreamDelivery(make_settings(fake.port, data_timeout=0.3, command_timeout=60))
    started = time.monotonic()
    async with asyncio.timeout(DEADLINE):
        result = await d.deliver(make_message())
    assert time.monotonic() - started >= 0.3 - EPSILON
    await d.close()
    assert code(result) == (False, 451, "4.4.2")
    assert d.pool.open == 0  # the connection in doubt is dropped, never reused


async def test_malformed_reply(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(rcpt=lambda a: b"hello there\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 451, "4.5.0")


@pytest.mark.parametrize(
    ("extensions", "envelope", "expected"),
    [
        # 4xx: the session offered the extension (relay.capabilities refuses it at MAIL once
        # the downstream is known to lack it); only the downstream changed since
        (("8BITMIME",), {"smtputf8": True}, (451, "4.6.7")),
        (("SMTPUTF8",), {"body": "8BITMIME"}, (451, "4.6.3")),
        (("SIZE 100",), {}, (552, "5.3.4")),
    ],
)
async def test_missing_extension_refuses_before_sending_anything(
    fake_downstream: FakeFactory,
    make_settings: SettingsFactory,
    make_message: MessageFactory,
    extensions: tuple[str, ...],
    envelope: dict[str, object],
    expected: tuple[int, str],
) -> None:
    fake = await fake_downstream(extensions=extensions)
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message(b"x" * 200 + b"\r\n", **envelope))
    await d.close()
    assert code(result) == (False, *expected)
    assert not any(line.startswith(b"MAIL") for line in fake.lines)


async def test_command_that_downstream_does_not_understand_is_not_passed_on_as_5xx(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(mail=lambda: b"500 5.5.1 unrecognised\r\n")
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message())
    await d.close()
    assert code(result) == (False, 451, "4.5.0")


async def test_envelope_with_line_break_is_never_sent(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port))
    result = await d.deliver(make_message(rcpts=["a@example.net>\r\nRCPT TO:<evil@example.com"]))
    await d.close()
    assert code(result) == (False, 451, "4.3.0")
    assert not any(b"evil" in line for line in fake.lines)


async def test_address_cannot_add_parameters(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream()
    d = DownstreamDelivery(make_settings(fake.port))
    bad = await d.deliver(make_message(mail_from="a@example.org> NOTIFY=NEVER"))
    assert code(bad) == (False, 451, "4.3.0")
    good = await d.deliver(make_message(rcpts=['"john <doe>"@example.net']))
    await d.close()
    assert good.accepted
    assert b'RCPT TO:<"john <doe>"@example.net>' in fake.lines
    assert not any(b"NOTIFY" in line for line in fake.lines)


async def test_cancelled_delivery_drops_its_connection(
    fake_downstream: FakeFactory, make_settings: SettingsFactory, make_message: MessageFactory
) -> None:
    fake = await fake_downstream(on_data="silent")
    d = DownstreamDelivery(make_settings(fake.port))
    task = asyncio.create_task(d.deliver(make_message()))
    # the server has the data and is sitting on its answer
    await wait_for(lambda: fake.messages, "the message at the downstream")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_for(lambda: d.pool.open == 0, "the connection dropped")
    assert b"QUIT" not in fake.lines
    await d.close()


def test_make_delivery_chooses(make_settings: SettingsFactory) -> None:
    assert isinstance(make_delivery(make_settings()), MaildirDelivery)
    assert isinstance(make_delivery(make_settings(2525)), DownstreamDelivery)
