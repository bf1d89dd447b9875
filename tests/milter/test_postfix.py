"""The milter behind a real private Postfix (smtpd_milters) on loopback, its DNS checks asking
the in-process test zone: what a Postfix user gets from it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from mailmoat import config
from mailmoat.dns import Resolver
from mailmoat.milter import codec
from mailmoat.milter.service import MilterService
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message, sign, verify_with_zone
from tests.support.fake_dns import world
from tests.support.peer_fixtures import PostfixFactory
from tests.support.ports import free_port
from tests.support.postfix import PostfixInstance
from tests.support.talk import Talk
from tests.support.waiting import wait_for

RCPT = "alice@example.test"


@contextlib.asynccontextmanager
async def milter(port: int, **overrides: Any) -> AsyncIterator[MilterService]:
    settings = config.load(
        None,
        {
            "server.hostname": zone.OUR_HOSTNAME,
            "domains.local": ["example.test"],
            "milter.listen": f"127.0.0.1:{port}",
            "dns.timeout": 1.0,
            **overrides,
        },
    )
    service = MilterService(settings, resolver=Resolver(settings.dns, nameservers=[world()]))
    await service.start()
    try:
        yield service
    finally:
        await service.close()


async def postfix(factory: PostfixFactory, milter_port: int) -> PostfixInstance:
    cf = {
        "smtpd_milters": f"inet:127.0.0.1:{milter_port}",
        "milter_default_action": "tempfail",
        "smtpd_forbid_bare_newline": "reject",
    }
    return await asyncio.to_thread(factory.downstream, main_cf=cf)


async def send(port: int, sender: str, msg: bytes, rcpt: str = RCPT) -> dict[str, bytes]:
    """One transaction from the test zone's good client; the replies by stage, up to the
    first refusal."""
    out: dict[str, bytes] = {}
    talk = await Talk.open(port, source=zone.GOOD_IP, timeout=30)
    try:
        for stage, line in (
            ("helo", f"EHLO {zone.GOOD_HELO}"),
            ("mail", f"MAIL FROM:<{sender}>"),
            ("rcpt", f"RCPT TO:<{rcpt}>"),
            ("data", "DATA"),
        ):
            out[stage] = answer = await talk.command(line)
            if answer[:1] not in (b"2", b"3"):
                return out
        talk.writer.write(msg + b".\r\n")
        out["message"] = await talk.reply()
        await talk.command("QUIT")
    finally:
        await talk.close()
    return out


def header_block(raw: bytes) -> list[bytes]:
    """The header fields of a delivered (LF) message, each with its continuation lines."""
    fields: list[bytes] = []
    for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields


async def test_spoofed_author_of_a_reject_domain_is_refused(
    postfix_instance: PostfixFactory,
) -> None:
    port = free_port()
    async with milter(port):
        mx = await postfix(postfix_instance, port)
        # SPF passes for strict.test, but the author is sender.test (p=reject), unsigned
        replies = await send(mx.port, "bounce@strict.test", message("ceo@sender.test"))
        assert replies["message"].startswith(b"550 5.7.1"), replies
        assert b"DMARC" in replies["message"], replies
        # the same message from its own domain passes
        replies = await send(mx.port, "a@sender.test", message("a@sender.test"))
        assert replies["message"].startswith(b"250"), replies
        delivered = await asyncio.to_thread(mx.wait_for_messages, "alice")
        assert len(delivered) == 1


async def test_forged_results_removed_ours_added_the_rest_unchanged(
    postfix_instance: PostfixFactory,
) -> None:
    port = free_port()
    forged = (
        f"Authentication-Results: {zone.OUR_HOSTNAME};\r\n\tdmarc=pass header.from=sender.test\r\n"
    )
    other = "Authentication-Results: elsewhere.test; spf=pass\r\n"
    # one 50 KB header field, folded: one packet (a 90 KB one reaches the mailbox cut to
    # about 60 KB with any milter in Postfix 3.7, OpenDKIM too: docs/integrated-mode.md)
    long_value = "X-Long: " + "\r\n\t".join(["y" * 70] * 700) + "\r\n"
    body = "Hello.\r\n\r\n  indented line\r\n100% sure\r\n" * 50
    original = message("a@sender.test", body=body, extra=forged + other + long_value)
    signed = sign(original)
    async with milter(port):
        mx = await postfix(postfix_instance, port)
        replies = await send(mx.port, "a@sender.test", signed)
        assert replies["message"].startswith(b"250"), replies
        [got] = await asyncio.to_thread(mx.wait_for_messages, "alice")
    fields = header_block(got.raw)
    ours = [f for f in fields if f.lower().startswith(b"authentication-results:")]
    assert len(ours) == 2, fields
    assert ours[0].startswith(f"Authentication-Results: {zone.OUR_HOSTNAME};".encode())
    assert b"dkim=pass" in ours[0] and b"dmarc=pass" in ours[0] and b"spf=pass" in ours[0]
    assert ours[1] == other.rstrip("\r\n").encode()
    # apart from Postfix's trace fields and our header, the bytes are the client's
    theirs = [
        f
        for f in fields
        if not f.startswith((b"Return-Path:", b"X-Original-To:", b"Delivered-To:", b"Received:"))
        and f is not ours[0]
    ]
    sent = signed.replace(forged.encode(), b"").replace(b"\r\n", b"\n")
    assert b"\n".join(theirs) + b"\n\n" + got.raw.split(b"\n\n", 1)[1] == sent
    assert verify_with_zone(got.content_crlf.replace(forged.encode(), b""))


async def test_milter_down_postfix_tempfails(postfix_instance: PostfixFactory) -> None:
    port = free_port()
    async with milter(port):
        mx = await postfix(postfix_instance, port)
        replies = await send(mx.port, "a@sender.test", message("a@sender.test"))
        assert replies["message"].startswith(b"250"), replies
    # the service is closed: Postfix's milter_default_action (tempfail) applies
    replies = await send(mx.port, "a@sender.test", message("a@sender.test"))
    assert replies["mail"].startswith(b"451 4.7.1"), replies


async def test_recipients_postfix_refused_count_for_harvest(
    postfix_instance: PostfixFactory, tmp_path: Path
) -> None:
    """Postfix refuses unknown users itself (550 5.1.1) and passes them on (SMFIP_RCPT_REJ):
    past harvest.threshold of them, the source gets the uniform answer for every recipient."""
    users = tmp_path / "users"
    users.write_text("alice@example.test\nbob@example.test\n")
    port = free_port()
    harvest = {
        "directory.default": "static",
        "directory.static_file": str(users),
        "harvest.tarpit_after": 3,
        "harvest.tarpit_delay": 0.0,
        "harvest.threshold": 3,
        "harvest.tarpit_max": 0.0,
    }
    async with milter(port, **harvest) as service:
        mx = await postfix(postfix_instance, port)
        talk = await Talk.open(mx.port, source=zone.GOOD_IP, timeout=30)
        try:
            await talk.start_mail(zone.GOOD_HELO, "a@sender.test")
            for n in range(3):
                answer = await talk.command(f"RCPT TO:<nobody{n}@example.test>")
                assert answer.startswith(b"550 5.1.1"), answer  # Postfix's own refusal
            answer = await talk.command(f"RCPT TO:<{RCPT}>")
            assert answer.startswith(b"450 4.7.1"), answer
        finally:
            await talk.close()
        await wait_for(lambda: service.stats.get("milter.rcpt_refused_by_mta") == 3)


async def test_postfix_sends_only_the_macros_the_milter_named(
    postfix_instance: PostfixFactory, monkeypatch: Any
) -> None:
    """The macro lists of the option negotiation (SMFIF_SETSYMLIST) replace Postfix's
    defaults: every macro packet Postfix sends holds only the queue ID, and the recipient's
    its status and mailer; the message still passes, the queue ID known from DATA on."""
    received: list[codec.Macros] = []
    decode = codec.decode

    def spied(command: bytes, data: bytes) -> codec.Event:  # records, then decodes as ever
        event = decode(command, data)
        if isinstance(event, codec.Macros):
            received.append(event)
        return event

    monkeypatch.setattr(codec, "decode", spied)
    port = free_port()
    async with milter(port):
        mx = await postfix(postfix_instance, port)
        replies = await send(mx.port, "a@sender.test", sign(message("a@sender.test")))
        assert replies["message"].startswith(b"250"), replies
    names = {m.stage: {name for name, _ in m.values} for m in received}
    assert set(names) >= {"C", "H", "M", "R", "T", "L", "B", "E"}, names
    assert names["R"] == {"{rcpt_host}", "{rcpt_mailer}"}, names
    assert all(n <= {"i"} for stage, n in names.items() if stage != "R"), names
    assert names["T"] == names["E"] == {"i"}, names


async def test_the_queue_id_postfix_gives_after_rcpt_is_logged(
    postfix_instance: PostfixFactory, caplog: Any
) -> None:
    """A stock Postfix (smtpd_delay_open_until_valid_rcpt = yes) names the queue ID only
    after the first valid RCPT: the milter reads it again at end of message, so the
    message's log lines carry the ID Postfix answers with."""
    caplog.set_level("INFO", logger="mailmoat")
    port = free_port()
    async with milter(port):
        mx = await postfix(postfix_instance, port)
        replies = await send(mx.port, "a@sender.test", message("a@sender.test"))
    assert replies["message"].startswith(b"250"), replies
    queued = replies["message"].split()[-1].decode()  # "250 2.0.0 Ok: queued as ID"
    ids = [r.fields.get("queue_id") for r in caplog.records if r.msg == "checks"]
    assert ids == [queued], (ids, queued)
