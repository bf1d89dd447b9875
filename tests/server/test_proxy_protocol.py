"""`server.proxy_protocol` end to end on loopback: the header is read only from the trusted
networks, its address is the client's for admission, pregreet, logs and `Received:`; a trusted
peer without a valid header is closed and counted; LOCAL is answered and not counted; and a
header from anywhere else is just a bad SMTP line. (tests/integration/test_haproxy.py puts a
real HAProxy in front.)"""

from __future__ import annotations

import io
import socket
import struct
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from mailmoat import logs
from mailmoat.config import LogSettings
from mailmoat.server import front
from mailmoat.server.proxy_header import V2_SIGNATURE
from tests.support import dns_zone as zone
from tests.support.dns_gateway import dns_gateway
from tests.support.fake_dns import ZoneNameserver
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.raw_client import RawClient, closed, connect, read_line, read_reply
from tests.support.waiting import wait_until

PROXY = "127.0.0.1/32"  # the test's sockets bound to 127.0.0.1 play the proxy


def v2_tcp4(src: str, sport: int = 40000) -> bytes:
    block = IPv4Address(src).packed + IPv4Address("127.0.0.1").packed
    return V2_SIGNATURE + b"\x21\x11\x00\x0c" + block + struct.pack("!HH", sport, 25)


def v2_local() -> bytes:
    return V2_SIGNATURE + b"\x20\x00\x00\x00"


def _counter(gw: RunningGateway, name: str) -> int:
    assert gw.gateway is not None
    return int(gw.call(gw.gateway.stats.get, name))


def _messages(maildir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((maildir / "new").glob("*"))]


def _send_one(c: RawClient) -> None:
    assert c.command(b"EHLO client.test\r\n").code == 250
    assert c.command(b"MAIL FROM:<a@sender.test>\r\n").code == 250
    assert c.command(b"RCPT TO:<alice@example.test>\r\n").code == 250
    assert c.command(b"DATA\r\n").code == 354
    assert c.command(b"Subject: hi\r\n\r\nhello\r\n.\r\n").code == 250
    assert c.command(b"QUIT\r\n").code == 221


def test_the_header_address_is_the_client_in_logs_and_received(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.send(v2_tcp4("192.0.2.77"))
            c.expect(220)
            _send_one(c)
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)
        assert _counter(gw, "connections.accepted") == 1
    (message,) = _messages(tmp_path / "md")
    assert b"Received: from client.test ([192.0.2.77])" in message
    lines = out.getvalue().splitlines()
    assert any(" transaction " in x and "client=192.0.2.77" in x for x in lines), lines
    assert not any("client=127.0.0.1" in x for x in lines), lines


@pytest.mark.parametrize(
    "header",
    [
        b"PROXY TCP6 ::ffff:192.0.2.78 ::1 40000 25\r\n",
        V2_SIGNATURE
        + b"\x21\x21\x00\x24"
        + IPv6Address("::ffff:192.0.2.78").packed
        + IPv6Address("::1").packed
        + struct.pack("!HH", 40000, 25),
    ],
)
def test_an_ipv4_mapped_client_is_named_in_ipv4(tmp_path: Path, header: bytes) -> None:
    """Red-team L1: a TCP6 header naming ::ffff:192.0.2.78 was logged as
    client=::ffff:c04e:024e; the log lines and Received: name 192.0.2.78."""
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.send(header)
            c.expect(220)
            _send_one(c)
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)
        wait_until(lambda: " disconnect " in out.getvalue(), "the session's last line")
    (message,) = _messages(tmp_path / "md")
    assert b"([192.0.2.78])" in message
    lines = [x for x in out.getvalue().splitlines() if "client=" in x]
    assert lines and all("client=192.0.2.78" in x for x in lines), lines


def test_v1_header_sent_in_pieces(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        with RawClient(gw.port, source="127.0.0.1") as c:
            line = b"PROXY TCP4 192.0.2.78 127.0.0.1 40001 25\r\n"
            for i in range(0, len(line), 7):
                c.send(line[i : i + 7])
                time.sleep(0.01)
            c.expect(220)
            _send_one(c)
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)
    assert b"([192.0.2.78])" in _messages(tmp_path / "md")[0]


def test_admission_counts_the_proxied_address(tmp_path: Path) -> None:
    """Every connection comes from 127.0.0.1; the cap per address and the deny list see the
    addresses in the headers."""
    settings = {
        "server.proxy_protocol": [PROXY],
        "admission.max_per_ip": 1,
        "admission.deny_networks": ["192.0.2.66/32"],
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        first = connect(gw.port, "127.0.0.1")
        second = connect(gw.port, "127.0.0.1")
        other = connect(gw.port, "127.0.0.1")
        denied = connect(gw.port, "127.0.0.1")
        try:
            first.sendall(v2_tcp4("192.0.2.10"))
            assert read_line(first).startswith(b"220 ")
            second.sendall(v2_tcp4("192.0.2.10", 40002))
            assert b"too many connections from your address" in read_reply(second)
            other.sendall(v2_tcp4("192.0.2.11"))
            assert read_line(other).startswith(b"220 ")
            denied.sendall(b"PROXY TCP4 192.0.2.66 127.0.0.1 5000 25\r\n")
            assert b"access denied" in read_reply(denied)
        finally:
            for s in (first, second, other, denied):
                s.close()
        assert _counter(gw, "refused.max_per_ip") == 1
        assert _counter(gw, "refused.denied") == 1


def test_client_bytes_after_the_header_stay_for_pregreet(tmp_path: Path) -> None:
    """A client that talks before the 220 in the same packet as the header: the header is
    read, not its bytes, so pregreet catches the client, and remembers the proxied address
    (refused at connect next time) while another address behind the same proxy is greeted."""
    settings = {"server.proxy_protocol": [PROXY], "pregreet.wait": 0.5}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with connect(gw.port, "127.0.0.1") as s:
            s.sendall(v2_tcp4("192.0.2.12") + b"EHLO early.test\r\n")
            assert not read_reply(s).startswith(b"2")
            assert closed(s)
        wait_until(lambda: _counter(gw, "pregreet.failed") == 1)
        with connect(gw.port, "127.0.0.1") as s:
            s.sendall(v2_tcp4("192.0.2.12"))
            assert read_reply(s).startswith(b"421 4.7.0")
        assert _counter(gw, "refused.pregreet") == 1
        with connect(gw.port, "127.0.0.1") as s:
            s.sendall(v2_tcp4("192.0.2.13"))
            assert read_line(s).startswith(b"220 ")  # after the wait: it said nothing


def test_untrusted_peer_header_is_plain_bad_smtp(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": ["127.0.0.1/32"]}) as gw:
        with RawClient(gw.port, source="127.0.0.2") as c:
            c.expect(220)
            reply = c.command(b"PROXY TCP4 192.0.2.99 127.0.0.1 5000 25\r\n")
            assert reply.code >= 500
            _send_one(c)
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)
        assert _counter(gw, "proxy.bad_header") == 0
    message = _messages(tmp_path / "md")[0]
    assert b"([127.0.0.2])" in message and b"192.0.2.99" not in message


def test_no_proxy_configured_never_reads_a_header(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md") as gw, RawClient(gw.port) as c:
        c.expect(220)  # greeted at once: nothing is waited for
        assert c.command(v2_local() + b"\r\n").code >= 500


BAD = {
    "garbage": b"EHLO client.test\r\n",
    "v1 too long": b"PROXY TCP4 " + b"1" * 120,
    "AF_UNIX": V2_SIGNATURE + b"\x21\x31\x00\xd8" + b"\x00" * 216,
    "closed half-way": b"PROXY TCP4 192.0.2.1",
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_trusted_peer_without_a_valid_header_is_closed(tmp_path: Path, data: bytes) -> None:
    out = io.StringIO()
    logs.setup(LogSettings(format="text"), out)
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        with connect(gw.port, "127.0.0.1") as s:
            s.sendall(data)
            if data.startswith(b"PROXY TCP4 192"):
                s.shutdown(socket.SHUT_WR)
            assert closed(s)
        wait_until(lambda: _counter(gw, "proxy.bad_header") == 1)
        assert _counter(gw, "connections.accepted") == 0
    assert any("proxy_refused" in x and "proxy=127.0.0.1" in x for x in out.getvalue().splitlines())


def test_a_silent_trusted_peer_is_closed_at_the_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front, "PROXY_HEADER_TIMEOUT", 0.3)
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        with connect(gw.port, "127.0.0.1") as s:
            assert closed(s)  # no greeting: the header comes first
        wait_until(lambda: _counter(gw, "proxy.bad_header") == 1)


def test_local_is_answered_and_not_counted(tmp_path: Path) -> None:
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        for header in (v2_local(), b"PROXY UNKNOWN\r\n"):
            with RawClient(gw.port, source="127.0.0.1") as c:
                c.send(header)
                c.expect(220)
                assert c.command(b"EHLO probe.example\r\n").code == 250
                assert gw.gateway is not None
                assert gw.call(lambda: gw.gateway.defences.admission.connections) == 0
                assert c.command(b"QUIT\r\n").code == 221
        wait_until(lambda: _counter(gw, "proxy.local") == 2)
        wait_until(lambda: not gw.gateway.sessions)  # type: ignore[union-attr]
        assert _counter(gw, "connections.accepted") == 0
        assert _counter(gw, "closed.quit") == 0


@pytest.mark.parametrize("header", [v2_local(), b"PROXY UNKNOWN\r\n"])
def test_local_is_a_health_check_that_takes_no_mail(tmp_path: Path, header: bytes) -> None:
    """Red-team M1: a LOCAL or UNKNOWN connection names no client, so it gets no mail
    session: with the proxy's address in relay_networks it used to relay for anyone, uncounted
    and unbanned. EHLO, NOOP, RSET, HELP and QUIT are answered; MAIL and VRFY are
    refused with 550 5.7.0, and the refusals strike no one (the proxy stays unbanned)."""
    settings = {
        "server.proxy_protocol": [PROXY],
        "domains.relay_networks": ["127.0.0.0/8"],
        "bans.strikes": 1,
    }
    with running_gateway(tmp_path / "md", **settings) as gw:
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.send(header)
            c.expect(220)
            assert c.command(b"EHLO probe.example\r\n").code == 250
            for command in (b"NOOP", b"RSET", b"HELP"):
                assert c.command(command + b"\r\n").code // 100 == 2, command
            for command in (b"MAIL FROM:<a@sender.test>", b"VRFY alice"):
                refused = c.command(command + b"\r\n")
                assert refused.code == 550 and "5.7.0" in refused.text, (command, refused)
            assert c.command(b"RCPT TO:<x@elsewhere.test>\r\n").code >= 500
            assert c.command(b"DATA\r\n").code >= 500
            assert c.command(b"QUIT\r\n").code == 221
        with RawClient(gw.port, source="127.0.0.1") as c:  # the proxy is not banned
            c.send(v2_tcp4("192.0.2.20"))
            c.expect(220)
            _send_one(c)
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)


# --- the DNS checks ask about the proxied address -----------------------------------------------
DNS_CHECKS = {
    "server.proxy_protocol": [PROXY],
    "fcrdns.action": "reject",
    "helo.action": "log",
    "spf.action": "log",
    "dmarc.action": "log",
    "dmarc.quarantine_action": "log",
    "dnsbl.lists": ["bl.test"],
}


async def test_dns_checks_use_the_proxied_address(fake_dns: ZoneNameserver) -> None:
    """The connection comes from 127.0.0.1 (the proxy, no PTR in the test zone); the header
    names the client that the FCrDNS and the DNS list look up."""
    async with dns_gateway(fake_dns, **DNS_CHECKS) as gw:
        good = await gw.send(source="127.0.0.1", preamble=v2_tcp4(zone.GOOD_IP))
        assert good.code("message") == 250, good.replies
        listed = await gw.send(source="127.0.0.1", preamble=v2_tcp4(zone.LISTED_IP))
        assert listed.replies["rcpt"] == (
            b"554 5.7.1 Service unavailable; client [127.0.0.5] blocked using bl.test\r\n"
        )
        no_ptr = await gw.send(source="127.0.0.1", preamble=v2_tcp4(zone.NOPTR_IP))
        assert no_ptr.code("rcpt") == 550 and b"5.7.25" in no_ptr.replies["rcpt"]
        assert fake_dns.asked("5.0.0.127.bl.test") == 1
    (message,) = gw.downstream.messages
    assert f"([{zone.GOOD_IP}])".encode() in message


def test_a_proxy_in_the_relay_networks_relays_for_no_one(tmp_path: Path) -> None:
    """Invariant 5: the proxy's own address is in domains.relay_networks, its clients' are
    not; relaying is decided on the client's."""
    settings = {"server.proxy_protocol": [PROXY], "domains.relay_networks": ["127.0.0.0/8"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.send(v2_tcp4("192.0.2.20"))
            c.expect(220)
            assert c.command(b"EHLO client.test\r\n").code == 250
            assert c.command(b"MAIL FROM:<a@sender.test>\r\n").code == 250
            assert c.command(b"RCPT TO:<x@elsewhere.test>\r\n").code == 554
        with RawClient(gw.port, source="127.0.0.1") as c:
            c.send(v2_tcp4("127.0.0.30"))  # a client inside the relay network may
            c.expect(220)
            assert c.command(b"EHLO client.test\r\n").code == 250
            assert c.command(b"MAIL FROM:<a@sender.test>\r\n").code == 250
            assert c.command(b"RCPT TO:<x@elsewhere.test>\r\n").code == 250


def test_headers_read_at_once_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front, "PROXY_PENDING_MAX", 2)
    with running_gateway(tmp_path / "md", **{"server.proxy_protocol": [PROXY]}) as gw:
        assert gw.gateway is not None
        proxies = gw.gateway._proxies
        silent = [connect(gw.port, "127.0.0.1"), connect(gw.port, "127.0.0.1")]
        try:
            wait_until(lambda: gw.call(lambda: proxies.pending) == 2, "two headers awaited")
            with connect(gw.port, "127.0.0.1") as s:
                assert closed(s)
            assert _counter(gw, "proxy.overflow") == 1
            for s in silent:
                s.close()
            wait_until(lambda: gw.call(lambda: proxies.pending) == 0, "both given up")
            with RawClient(gw.port, source="127.0.0.1") as c:  # room again
                c.send(v2_tcp4("192.0.2.21"))
                c.expect(220)
        finally:
            for s in silent:
                s.close()


def test_an_ipv6_proxy_and_an_ipv6_client(tmp_path: Path) -> None:
    settings = {"server.listen": ["[::1]:0"], "server.proxy_protocol": ["::1/128"]}
    with running_gateway(tmp_path / "md", **settings) as gw:
        with socket.create_connection(("::1", gw.port), timeout=20) as s:
            s.sendall(b"PROXY TCP6 2001:db8::25 ::1 40000 25\r\n")
            assert read_line(s).startswith(b"220 ")
            for line in (b"EHLO c.test", b"MAIL FROM:<a@b.test>", b"RCPT TO:<alice@example.test>"):
                s.sendall(line + b"\r\n")
                assert read_reply(s).startswith(b"250")
            s.sendall(b"DATA\r\n")
            assert read_reply(s).startswith(b"354")
            s.sendall(b"Subject: v6\r\n\r\nhi\r\n.\r\n")
            assert read_reply(s).startswith(b"250")
        wait_until(lambda: len(_messages(tmp_path / "md")) == 1)
    assert b"([IPv6:2001:db8::25])" in _messages(tmp_path / "md")[0]
