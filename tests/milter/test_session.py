"""The milter service on a loopback socket, driven packet by packet as Postfix drives it: the
negotiation, replies, harvest counting of recipients the MTA refused, and bad input closing
only its own connection."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.dns import Resolver
from mailmoat.limits import MILTER_MAX_PACKET
from mailmoat.milter import codec
from mailmoat.milter import session as session_module
from mailmoat.milter.codec import packet
from mailmoat.milter.service import MilterService
from mailmoat.policy.base import Check, Client, HookResult, Pipeline
from tests.support import dns_zone as zone
from tests.support import milter_peer as mta
from tests.support.fake_dns import world
from tests.support.gateway import gateway_settings, running_gateway
from tests.support.milter_peer import MilterPeer
from tests.support.ports import free_port, is_listening
from tests.support.waiting import wait_for

CONTINUE = (b"c", b"")


@contextlib.asynccontextmanager
async def service(**overrides: Any) -> AsyncIterator[MilterService]:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.example.test",
            "domains.local": ["example.test"],
            "milter.listen": "127.0.0.1:0",
            "dns.checks": False,
            **overrides,
        },
    )
    milter = MilterService(settings)
    await milter.start()
    try:
        yield milter
    finally:
        await milter.close()


def port_of(milter: MilterService) -> int:
    assert isinstance(milter.address, tuple)
    return milter.address[1]


async def connected(milter: MilterService, address: str = "192.0.2.10") -> MilterPeer:
    peer = await MilterPeer.open(port_of(milter))
    await peer.negotiate()
    assert await peer.ask(mta.connect(address)) == CONTINUE
    assert await peer.ask(mta.strings(b"H", "mail.client.test")) == CONTINUE
    return peer


async def test_negotiation_asks_for_rejected_recipients_and_header_edits() -> None:
    async with service() as milter:
        peer = await MilterPeer.open(port_of(milter))
        actions, steps = await peer.negotiate()
        assert actions == codec.ACT_ADDHDRS | codec.ACT_CHGHDRS | codec.ACT_SETSYMLIST
        assert steps & codec.P_RCPT_REJ and steps & codec.P_HDR_LEADSPC
        assert steps & codec.P_NR_HDR and steps & codec.P_NR_BODY
        await peer.close()
        # an MTA offering fewer steps is asked for no more than it offers
        peer = await MilterPeer.open(port_of(milter))
        _, steps = await peer.negotiate(steps=codec.P_RCPT_REJ)
        assert steps == codec.P_RCPT_REJ
        # without NR_HDR each header gets its answer
        await peer.send(mta.connect("192.0.2.10"))
        assert await peer.answer() == CONTINUE
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        assert await peer.ask(mta.header("Subject", "x")) == CONTINUE
        await peer.close()


class _LooksAtData(Check):
    name = "looks_at_data"

    def data(self, client: Client) -> HookResult:
        return None


async def test_negotiation_leaves_out_the_packets_no_check_needs() -> None:
    """No end-of-headers packet ever, no DATA packet while no check looks at DATA: each one
    saved is a packet parsed (and for DATA an answer written) per message."""
    async with service() as milter:
        peer = await MilterPeer.open(port_of(milter))
        _, steps = await peer.negotiate()
        assert steps & codec.P_NOEOH and steps & codec.P_NODATA
        await peer.close()
        checks = Pipeline([*milter.pipeline.checks, _LooksAtData()])
        milter.state = dataclasses.replace(milter.state, pipeline=checks)
        peer = await MilterPeer.open(port_of(milter))
        _, steps = await peer.negotiate()
        assert steps & codec.P_NOEOH and not steps & codec.P_NODATA
        await peer.close()


async def test_negotiation_names_the_macros_read_when_the_mta_lets_it() -> None:
    """SMFIF_SETSYMLIST offered (Postfix offers it): the answer asks for the queue ID at every
    stage and for what says the MTA refused a recipient, in place of the MTA's default lists
    (client and daemon names, addresses, mailers: parsed for nothing). Not offered: the
    answer is the three numbers alone, as before."""
    async with service() as milter:
        peer = await MilterPeer.open(port_of(milter))
        actions, _, lists = await peer.negotiation()
        assert actions & codec.ACT_SETSYMLIST
        assert lists == {stage: "i" for stage in range(7)} | {
            codec.M_ENVRCPT: "i {rcpt_host} {rcpt_mailer}"
        }
        await peer.close()
        peer = await MilterPeer.open(port_of(milter))
        actions, _, lists = await peer.negotiation(actions=mta.ALL_ACTIONS & ~0x100)
        assert not actions & codec.ACT_SETSYMLIST and lists == {}
        await peer.close()


async def test_without_an_end_of_headers_packet_the_body_ends_the_headers() -> None:
    """SMFIP_NOEOH: the first body chunk (or the end of the message) ends the header block;
    our forged Authentication-Results field is found there and deleted."""
    forged = (b"Authentication-Results", b" mx.example.test; dmarc=pass")
    async with service() as milter:
        for body in (b"Hello.\r\n", b""):
            peer = await connected(milter)
            assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
            assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
            await peer.send(mta.header("Subject", b" hi"), mta.header(*forged))
            if body:
                await peer.send(packet(b"B", body))
            assert await peer.ask(packet(b"E")) == (
                b"m",
                struct.pack(">I", 1) + b"authentication-results\0\0",
            )
            assert await peer.answer() == CONTINUE
            await peer.close()
        await wait_for(lambda: milter.stats.get("milter.messages.accepted") == 2)


async def test_a_refusal_is_a_reply_code_with_percent_doubled() -> None:
    async with service() as milter:
        peer = await connected(milter)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        # not an open relay: the gateway's relay check, through the milter
        command, text = await peer.ask(mta.strings(b"R", "<x@elsewhere.test>"))
        assert (command, text) == (b"y", b"554 5.7.1 Relay access denied\0")
        # sender-specified routing: the reply text holds a %, which the MTA reads as a format
        command, text = await peer.ask(mta.strings(b"R", "<victim%outside@example.test>"))
        assert command == b"y" and text.startswith(b"550 5.7.1 Sender-specified routing (%%, !")
        assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        await peer.close()
        await wait_for(lambda: milter.stats.get("milter.rejected.relay_access") == 2)


async def test_abort_twice_then_a_new_transaction_and_quit_nc(tmp_path: Path) -> None:
    async with service() as milter:
        peer = await connected(milter)
        for _ in range(2):
            assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
            assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
            await peer.send(mta.header("Subject", " hi"), packet(b"N"), packet(b"B", b"x\r\n"))
            assert await peer.ask(packet(b"E")) == CONTINUE
            await peer.send(packet(b"A"), packet(b"A"))
        # the next SMTP connection on the same milter connection
        await peer.send(packet(b"K"))
        assert await peer.ask(mta.connect("192.0.2.11")) == CONTINUE
        assert await peer.ask(mta.strings(b"M", "<>")) == CONTINUE
        await peer.send(packet(b"Q"))
        assert await peer.closed()
        await wait_for(lambda: milter.stats.get("milter.messages.accepted") == 2)
        assert not any(k.startswith("milter.errors") for k in milter.stats.snapshot())


async def test_recipients_the_mta_refused_count_for_harvest(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    overrides = {
        "directory.default": "static",
        "directory.static_file": str(users),
        "harvest.threshold": 3,
        "harvest.tarpit_after": 3,
        "harvest.tarpit_delay": 0.0,
        "harvest.tarpit_max": 0.0,
        "harvest.session_max_unknown": 100,
    }
    async with service(**overrides) as milter:
        peer = await connected(milter)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        for n in range(3):
            # Postfix refused it (its own recipient check) and tells us so (SMFIP_RCPT_REJ)
            await peer.send(mta.macros(b"R", **{"{rcpt_mailer}": "error", "{rcpt_host}": "5.1.1"}))
            assert await peer.ask(mta.strings(b"R", f"<nobody{n}@example.test>")) == CONTINUE
        # the next recipient's macros replace the last one's: no "error" lingers
        await peer.send(mta.macros(b"R", **{"{rcpt_addr}": "alice@example.test"}))
        # the source is a harvester now: even a valid recipient gets the uniform answer
        command, text = await peer.ask(mta.strings(b"R", "<alice@example.test>"))
        assert (command, text[:9]) == (b"y", b"450 4.7.1"), text
        assert milter.stats.get("milter.rcpt_refused_by_mta") == 3
        await peer.close()


async def test_a_100k_header_field_passes_and_an_oversized_block_is_refused() -> None:
    async with service(**{"smtp.max_header_size": 200 * 1024}) as milter:
        peer = await connected(milter)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        await peer.send(mta.header("X-Big", b" " + b"x" * 100 * 1024), packet(b"N"))
        assert await peer.ask(packet(b"E", b"body\r\n")) == CONTINUE
        # a second one makes the header block longer than smtp.max_header_size
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        big = mta.header("X-Big", b" " + b"x" * 100 * 1024)
        await peer.send(big, big, packet(b"N"))
        command, text = await peer.ask(packet(b"E"))
        assert (command, text[:9]) == (b"y", b"552 5.3.4")
        await peer.close()


BAD_INPUT = {
    "unknown command": (packet(b"Z", b"x"), "unknown_command"),
    "oversized packet": (struct.pack(">I", 10 * 1024 * 1024) + b"B", "packet_too_big"),
    "stops mid-packet": (struct.pack(">I", 100) + b"B" + b"x" * 10, "truncated"),
    "header without its NUL": (packet(b"L", b"Subject\0x"), "unterminated"),
    "mail before connect": (mta.strings(b"M", "<a@b.test>"), "bad_sequence"),
    "connect with a bad address": (
        packet(b"C", b"h\x004\0\x19not-an-ip\0"),
        "bad_connect",
    ),
    "too many macros": (
        mta.macros(b"C", **{f"m{i}": "v" for i in range(100)}),
        "too_many_macros",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
async def test_bad_input_closes_its_connection_only(case: str) -> None:
    data, reason = BAD_INPUT[case]
    async with service() as milter:
        other = await connected(milter)
        assert await other.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        bad = await MilterPeer.open(port_of(milter))
        await bad.negotiate()
        await bad.send(data)
        if reason == "truncated":
            bad.writer.write_eof()
        assert await bad.closed()
        await wait_for(
            lambda: milter.stats.get(f"milter.errors.{reason}") == 1,
            describe=milter.stats.snapshot,
        )
        # the other MTA connection goes on undisturbed
        assert await other.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        await other.send(mta.header("Subject", " fine"), packet(b"N"))
        assert await other.ask(packet(b"E", b"body\r\n")) == CONTINUE
        await bad.close()
        await other.close()


async def test_steps_outside_a_transaction_and_a_header_after_the_body() -> None:
    async with service() as milter:
        peer = await connected(milter)
        # after a MAIL the MTA refused, it may go on: those steps pass unchecked
        assert await peer.ask(mta.strings(b"R", "<bob@example.test>")) == CONTINUE
        assert await peer.ask(packet(b"E")) == CONTINUE
        # a header once the body has begun is out of sequence
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        await peer.send(packet(b"N"), mta.header("Late", " x"))
        assert await peer.closed()
        await wait_for(lambda: milter.stats.get("milter.errors.bad_sequence") == 1)


async def test_no_negotiation_first_closes() -> None:
    async with service() as milter:
        peer = await MilterPeer.open(port_of(milter))
        await peer.send(mta.connect("192.0.2.1"))
        assert await peer.closed()
        await wait_for(lambda: milter.stats.get("milter.errors.bad_sequence") == 1)


@pytest.mark.parametrize("address", ["2001:db8::1", "IPv6:2001:db8::1"])
async def test_an_ipv6_client_as_postfix_and_sendmail_write_it(address: str) -> None:
    async with service(**{"admission.deny_networks": ["2001:db8::/32"]}) as milter:
        peer = await MilterPeer.open(port_of(milter))
        await peer.negotiate()
        command, text = await peer.ask(mta.connect(address))
        assert command == b"y" and text[:1] in (b"4", b"5"), text
        await peer.close()
        await wait_for(lambda: milter.stats.get("refused.denied") == 1)


async def test_a_local_submission_is_accepted_unchecked() -> None:
    async with service() as milter:
        peer = await MilterPeer.open(port_of(milter))
        await peer.negotiate()
        assert await peer.ask(packet(b"C", b"localhost\0U")) == (b"a", b"")
        await peer.close()


async def test_a_unix_socket(tmp_path: Path) -> None:
    path = tmp_path / "milter.sock"
    async with service(**{"milter.listen": str(path)}) as milter:
        assert milter.address == str(path)
        assert path.stat().st_mode & 0o777 == 0o660
    assert not path.exists()


async def test_serve_runs_the_milter_beside_the_gateway(tmp_path: Path) -> None:
    """`mailmoat serve` with milter.listen answers the MTA's negotiation, and SIGTERM ends it."""
    smtp_port, milter_port = free_port(), free_port()
    conf = tmp_path / "m.toml"
    conf.write_text(
        f'[server]\nlisten = ["127.0.0.1:{smtp_port}"]\nworkers = 1\n'
        'hostname = "mx.example.test"\n[domains]\nlocal = ["example.test"]\n'
        f'[maildir]\npath = "{tmp_path / "md"}"\n[dns]\nchecks = false\n'
        f'[milter]\nlisten = "127.0.0.1:{milter_port}"\n'
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mailmoat", "serve", "-c", str(conf)
    )
    try:
        await wait_for(lambda: is_listening(milter_port), "the milter port", timeout=60)
        peer = await MilterPeer.open(milter_port)
        actions, _ = await peer.negotiate()
        assert actions == codec.WANTED_ACTIONS
        await peer.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0


async def test_the_dns_checks_decide_at_rcpt() -> None:
    """A client on a DNS block list is refused at RCPT, as by the gateway (the test zone's
    name server in process)."""
    overrides = {"dns.checks": True, "dnsbl.lists": ["bl.test"], "dns.timeout": 1.0}
    settings = config.load(
        None,
        {
            "server.hostname": "mx.example.test",
            "domains.local": ["example.test"],
            "milter.listen": "127.0.0.1:0",
            **overrides,
        },
    )
    milter = MilterService(settings, resolver=Resolver(settings.dns, nameservers=[world()]))
    await milter.start()
    try:
        for address, listed in ((zone.LISTED_IP, True), (zone.GOOD_IP, False)):
            peer = await connected(milter, address)
            assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
            command, text = await peer.ask(mta.strings(b"R", "<bob@example.test>"))
            if listed:
                assert (command, text[:9]) == (b"y", b"554 5.7.1"), text
            else:
                assert (command, text) == CONTINUE
            await peer.close()
    finally:
        await milter.close()


async def test_a_peer_outside_milter_clients_is_closed_at_accept() -> None:
    """The milter believes the client address and recipients its peer names: a peer not in
    milter.clients is closed before it can say anything (red-team H1)."""
    async with service(**{"milter.clients": ["127.0.0.2/32"]}) as milter:
        stranger = await MilterPeer.open(port_of(milter))
        assert await stranger.closed()
        await wait_for(lambda: milter.stats.get("milter.refused_peer") == 1)
        await stranger.close()
        mta_peer = await MilterPeer.open(port_of(milter), source="127.0.0.2")
        await mta_peer.negotiate()
        assert await mta_peer.ask(mta.connect("192.0.2.10")) == CONTINUE
        await mta_peer.close()
        assert milter.stats.get("milter.refused_peer") == 1


async def test_milter_clients_default_to_loopback() -> None:
    async with service() as milter:
        assert milter.settings.milter.clients == ["127.0.0.0/8", "::1/128"]
        peer = await connected(milter)
        await peer.close()
        assert milter.stats.get("milter.refused_peer") == 0


async def test_packets_being_read_count_against_the_node_memory_budget() -> None:
    """Red-team M3: connections each declaring a 256 KiB packet and sending all but its last
    octet held 420 MB at 1,200 connections. The packets being read share
    server.spool_memory_total: one that would go past it is closed, the others go on."""
    budget = 300 * 1024
    async with service(**{"server.spool_memory_total": budget}) as milter:
        declared = struct.pack("!I", MILTER_MAX_PACKET)  # and 200 KiB of it sent
        first = await MilterPeer.open(port_of(milter))
        await first.send(declared + b"O" + bytes(200 * 1024))
        await wait_for(lambda: milter.packet_budget.used >= 200 * 1024)
        second = await MilterPeer.open(port_of(milter))
        with contextlib.suppress(ConnectionError):  # closed with our data unread: a reset
            await second.send(declared + b"O" + bytes(200 * 1024))
        await wait_for(lambda: milter.stats.get("milter.errors.memory") == 1)
        with contextlib.suppress(ConnectionError):
            assert await second.reader.read(1) == b""
        await second.close()
        assert milter.packet_budget.used <= budget
        await first.close()
        await wait_for(lambda: milter.packet_budget.used == 0)
        peer = await connected(milter)  # the memory is back for the next MTA
        await peer.close()


async def test_reload_new_connections_get_the_new_checks_open_ones_keep_theirs(
    tmp_path: Path,
) -> None:
    """SIGHUP (`reload`): a connection opened after it runs checks built from the new
    settings (a new directory file, a denied network); one open before it finishes under
    the old checks; a reload whose checks cannot start changes nothing."""
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    static = {"directory.default": "static", "directory.static_file": str(users)}
    carol = mta.strings(b"R", "<carol@example.test>")
    async with service(**static) as milter:
        before = await connected(milter)
        assert await before.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert (await before.ask(carol))[0] == b"y"
        users.write_text("alice@example.test\ncarol@example.test\n")
        overrides = {
            "server.hostname": "mx.example.test",
            "domains.local": ["example.test"],
            "milter.listen": "127.0.0.1:0",
            "dns.checks": False,
            "admission.deny_networks": ["192.0.2.99/32"],
            **static,
        }
        await milter.reload(config.load(None, overrides))
        after = await connected(milter)
        assert await after.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert await after.ask(carol) == CONTINUE
        await after.close()
        denied = await MilterPeer.open(port_of(milter))
        await denied.negotiate()
        command, text = await denied.ask(mta.connect("192.0.2.99"))
        assert (command, text[:3]) == (b"y", b"421"), text
        await denied.close()
        # the connection from before the reload still has the old directory
        assert (await before.ask(carol))[0] == b"y"
        await before.close()
        # a reload whose checks cannot start raises and leaves the new checks in place
        missing = {"directory.static_file": str(tmp_path / "missing")}
        with pytest.raises(Exception, match="missing"):
            await milter.reload(config.load(None, {**overrides, **missing}))
        again = await connected(milter)
        assert await again.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert await again.ask(carol) == CONTINUE
        await again.close()


def test_the_gateways_reload_reaches_its_milter(tmp_path: Path) -> None:
    """The host's reload (what SIGHUP runs) passes the new settings on to the milter beside
    it, as to the policy service: a new directory file is in force for new connections."""
    users = tmp_path / "users"
    users.write_text("alice@example.test\n")
    port = free_port()
    overrides = {
        "server.listen": [],
        "milter.listen": f"127.0.0.1:{port}",
        "directory.default": "static",
        "directory.static_file": str(users),
    }

    async def carol() -> tuple[bytes, bytes]:
        peer = await MilterPeer.open(port)
        try:
            await peer.negotiate()
            assert await peer.ask(mta.connect("192.0.2.10")) == CONTINUE
            assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
            return await peer.ask(mta.strings(b"R", "<carol@example.test>"))
        finally:
            await peer.close()

    with running_gateway(tmp_path / "Maildir", **overrides) as gw:
        assert gw.gateway is not None
        assert asyncio.run(carol())[0] == b"y"
        users.write_text("alice@example.test\ncarol@example.test\n")
        new = gateway_settings(tmp_path / "Maildir", **overrides)
        assert gw.run(gw.gateway.reload(new)) == []
        assert asyncio.run(carol()) == CONTINUE


async def test_a_silent_mta_is_closed_a_slow_one_is_not(monkeypatch: pytest.MonkeyPatch) -> None:
    """The idle bound counts each wait for the MTA, not the connection's age: packets every
    0.1 s for longer than the bound keep it open; silence past the bound closes it, counted
    under milter.errors.timeout."""
    monkeypatch.setattr(session_module, "MILTER_IDLE_TIMEOUT", 1.5)
    async with service() as milter:
        peer = await connected(milter)
        loop = asyncio.get_running_loop()
        start = loop.time()
        while loop.time() - start < 3.2:  # twice the bound, never silent past it
            await peer.send(mta.macros(b"M", i="Q1"))
            await asyncio.sleep(0.1)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        assert milter.stats.get("milter.errors.timeout") == 0
        assert await peer.closed(timeout=30)
        await wait_for(lambda: milter.stats.get("milter.errors.timeout") == 1)
