"""Client checks through a real gateway: forward-confirmed reverse DNS, the HELO name, DNS block
and allow lists; each action (log, score, tempfail, reject), the session score, and DNS failures
that never turn into an accept where a refusal was due. The DNS answers come from the test zone
in process (`fake_dns`); a few tests ask the private dnsmasq (`dns_server`, `silent_dns`) to
show the same checks work over the network end to end."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.policy.fcrdns import FcrdnsCheck
from mailmoat.policy.helo import HELO, HeloCheck, is_fqdn, literal_address
from mailmoat.policy.results import IPREV
from mailmoat.policy.score import Karma, SessionState
from mailmoat.smtp.events import Helo
from tests.support import dns_zone as zone
from tests.support.dns_gateway import RCPT, captured_logs, dns_gateway
from tests.support.dnsmasq import Dnsmasq, SilentServer
from tests.support.fake_dns import ZoneNameserver, world
from tests.support.fake_dns import resolver as fake_resolver

# Only the check under test acts; the others log (DMARC too: these are client tests).
QUIET = {
    "fcrdns.action": "log",
    "helo.action": "log",
    "spf.action": "log",
    "dmarc.action": "log",
    "dmarc.quarantine_action": "log",
}


def only(**overrides: object) -> dict[str, object]:
    return {**QUIET, **overrides}


# --- FCrDNS ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code"),
    [(zone.GOOD_IP, 250), (zone.LIAR_IP, 550), (zone.NOPTR_IP, 550), (zone.MISMATCH_IP, 550)],
)
async def test_fcrdns_reject(fake_dns: ZoneNameserver, source: str, code: int) -> None:
    async with dns_gateway(fake_dns, **only(**{"fcrdns.action": "reject"})) as gw:
        out = await gw.send(source=source, helo="client.sender.test")
        assert out.code("rcpt") == code, out.replies
        if code == 550:
            assert b"5.7.25" in out.replies["rcpt"]
        else:
            assert out.code("message") == 250


async def test_fcrdns_tempfail_and_log(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only(**{"fcrdns.action": "tempfail"})) as gw:
        out = await gw.send(source=zone.NOPTR_IP)
        assert out.replies["rcpt"].startswith(b"450 4.7.25")
    with captured_logs() as logs:
        async with dns_gateway(fake_dns, **only()) as gw:
            out = await gw.send(source=zone.NOPTR_IP)
            assert out.code("message") == 250
    [line] = [f for f in logs.of("check") if f["check"] == "fcrdns"]
    assert line["result"] == "fail" and line["reason"] == "no PTR record"


async def test_fcrdns_reports_iprev(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only()) as gw:
        assert (await gw.send(source=zone.GOOD_IP)).code("message") == 250
        delivered = gw.downstream.messages[0]
    assert b"iprev=pass policy.iprev=127.0.0.2 (mail.sender.test)" in delivered


# --- HELO --------------------------------------------------------------------------------------


def test_helo_syntax() -> None:
    assert is_fqdn("mail.sender.test") and is_fqdn("MAIL.Sender.Test.")
    for bad in ("localhost", "1.2.3.4", "-x.test", "a..test", "x_y.test", "a." + "b" * 64):
        assert not is_fqdn(bad), bad
    assert str(literal_address("[127.0.0.2]")) == "127.0.0.2"
    assert str(literal_address("[IPv6:::1]")) == "::1"
    for bad in ("[IPv6:127.0.0.1]", "[::1]", "[300.1.1.1]", "[x]"):
        assert literal_address(bad) is None, bad


@pytest.mark.parametrize(
    ("helo", "verdict"),
    [
        (zone.GOOD_HELO, "pass"),
        ("[127.0.0.2]", "pass"),
        ("alias.sender.test", "pass"),
        ("localhost", "fail invalid"),
        ("[127.0.0.99]", "fail mismatch"),
        ("[IPv6:bogus]", "fail invalid"),
        (zone.OUR_HOSTNAME, "fail forged"),
        ("example.test", "fail forged"),
        ("ghost.sender.test", "fail unresolvable"),
    ],
)
async def test_helo_checks(fake_dns: ZoneNameserver, helo: str, verdict: str) -> None:
    with captured_logs() as logs:
        async with dns_gateway(fake_dns, **only(**{"helo.action": "reject"})) as gw:
            out = await gw.send(helo=helo)
    [line] = [f for f in logs.of("check") if f["check"] == "helo"]
    assert line["result"] == verdict
    if verdict == "pass":
        assert out.code("message") == 250
    else:
        assert out.replies["rcpt"].startswith(b"550 5.7.1 Helo command rejected")


async def test_helo_points_add_up_to_the_threshold(fake_dns: ZoneNameserver) -> None:
    settings = only(**{"helo.action": "score", "score.threshold": 5})
    async with dns_gateway(fake_dns, **settings) as gw:
        assert (await gw.send(helo="ghost.sender.test")).code("message") == 250  # 1 point
        forged = await gw.send(helo=zone.OUR_HOSTNAME)  # 5 points
        assert forged.replies["rcpt"].startswith(b"550 5.7.1 Message refused")


# --- DNS lists ---------------------------------------------------------------------------------


async def test_dnsbl_listed_client_is_refused_with_the_list_named(dns_server: Dnsmasq) -> None:
    async with dns_gateway(dns_server.address, **only(**{"dnsbl.lists": ["bl.test"]})) as gw:
        out = await gw.send(source=zone.LISTED_IP, helo="listed.sender.test")
        assert out.replies["rcpt"] == (
            b"554 5.7.1 Service unavailable; client [127.0.0.5] blocked using bl.test\r\n"
        )
        assert (await gw.send(source=zone.GOOD_IP)).code("message") == 250
        assert not [m for m in gw.downstream.messages if b"listed.sender.test" in m]


async def test_dnsbl_reply_filter_and_weights(fake_dns: ZoneNameserver) -> None:
    # bl2.test answers 127.0.0.3: the filter 127.0.0.2 does not match it
    lists = ["bl2.test=127.0.0.2*5", "bl.test=127.0.0.[2..4]*1"]
    async with dns_gateway(fake_dns, **only(**{"dnsbl.lists": lists, "dnsbl.threshold": 2})) as gw:
        assert (await gw.send(source=zone.LISTED_IP)).code("message") == 250
    lists = ["bl2.test=127.0.0.[3;9]*1", "bl.test=127.0.0.[2..4]*1"]
    async with dns_gateway(fake_dns, **only(**{"dnsbl.lists": lists, "dnsbl.threshold": 2})) as gw:
        out = await gw.send(source=zone.LISTED_IP)
        assert out.code("rcpt") == 554 and b"bl2.test, bl.test" in out.replies["rcpt"]


async def test_allow_list_skips_the_later_client_checks(fake_dns: ZoneNameserver) -> None:
    settings = only(
        **{
            "dnsbl.lists": ["bl.test*2", "wl.test*-2"],
            "fcrdns.action": "reject",
            "helo.action": "reject",
        }
    )
    async with dns_gateway(fake_dns, **settings) as gw:
        # no PTR and a bad HELO, but the allow list vouches for it
        assert (await gw.send(source=zone.ALLOWED_IP, helo="localhost")).code("message") == 250
        # the same without the allow list's entry is refused
        assert (await gw.send(source=zone.NOPTR_IP, helo="localhost")).code("rcpt") == 550


async def test_dnsbl_result_is_cached_per_client(fake_dns: ZoneNameserver) -> None:
    async with dns_gateway(fake_dns, **only(**{"dnsbl.lists": ["bl.test"]})) as gw:
        name = "5.0.0.127.bl.test"
        before = fake_dns.asked(name)
        for _ in range(3):
            assert (await gw.send(source=zone.LISTED_IP)).code("rcpt") == 554
        assert fake_dns.asked(name) == before + 1
        assert await gw.gateway.store.get("dnsbl:127.0.0.5") is not None


async def test_dnsbl_score_mode_feeds_the_session_score(fake_dns: ZoneNameserver) -> None:
    settings = only(
        **{
            "dnsbl.lists": ["bl.test*3"],
            "dnsbl.action": "score",
            "helo.action": "score",
            "score.threshold": 4,
        }
    )
    async with dns_gateway(fake_dns, **settings) as gw:
        # listed (3 points) with a good HELO: under the threshold
        good_helo = await gw.send(source=zone.LISTED_IP, helo="listed.sender.test")
        assert good_helo.code("message") == 250
        # listed (3) and a HELO that is not a FQDN (1): the score reaches 4
        bad_helo = await gw.send(source=zone.LISTED_IP, helo="localhost")
        assert bad_helo.replies["rcpt"].startswith(b"550 5.7.1 Message refused")


# --- DNS failures ------------------------------------------------------------------------------


async def test_silent_dns_never_gives_a_reject_decision_an_accept(
    silent_dns: SilentServer,
) -> None:
    """With every lookup timing out: checks that would reject answer 4xx, never 250."""
    for check, settings in (
        ("dnsbl", {"dnsbl.lists": ["bl.test"]}),
        ("fcrdns", {"fcrdns.action": "reject"}),
        ("helo", {"helo.action": "reject"}),
        ("spf", {"spf.action": "reject"}),
    ):
        with captured_logs() as logs:
            async with dns_gateway(
                silent_dns.address, **only(**settings), **{"dns.timeout": 0.3}
            ) as gw:
                out = await gw.send(source=zone.LISTED_IP)
        assert out.replies["rcpt"].startswith(b"451 4.4.3"), (check, out.replies)
        results = {f["check"]: f["result"] for f in logs.of("check")}
        assert results[check] == "temperror"


async def test_silent_dns_with_default_settings_defers_at_the_end_of_data(
    fake_dns: ZoneNameserver,
) -> None:
    """Defaults: FCrDNS (2), HELO (1) and SPF (3) score; their timeouts hold 6 points pending,
    enough for the threshold of 5, so the RCPT is deferred. With a threshold they cannot reach,
    DMARC (reject by default) still defers the message: its policy could not be read."""
    fake_dns.silent = True
    async with dns_gateway(fake_dns, **{"dns.timeout": 0.3}) as gw:
        out = await gw.send()
    assert out.replies["rcpt"].startswith(b"451 4.4.3")
    async with dns_gateway(fake_dns, **{"dns.timeout": 0.3, "score.threshold": 7}) as gw:
        out = await gw.send()
        assert out.code("rcpt") == 250
        assert out.replies["message"].startswith(b"451 4.4.3")
        assert gw.downstream.messages == []


async def test_pending_points_defer_only_where_they_could_matter(fake_dns: ZoneNameserver) -> None:
    """No PTR (2 points) and an SPF lookup that fails (example.org is REFUSED by the test
    server: 3 points pending): 2 + 3 reaches a threshold of 5, so 4xx; a threshold of 6
    cannot be reached, so the message is accepted."""
    base = {"fcrdns.action": "score", "spf.action": "score", "dmarc.action": "log"}
    for threshold, code in ((5, 451), (6, 250)):
        async with dns_gateway(fake_dns, **base, **{"score.threshold": threshold}) as gw:
            out = await gw.send(source=zone.NOPTR_IP, sender="a@example.org")
            assert out.code("rcpt") == code, out.replies


async def test_relay_networks_skip_the_dns_checks(fake_dns: ZoneNameserver) -> None:
    settings = {
        "fcrdns.action": "reject",
        "helo.action": "reject",
        "domains.relay_networks": ["127.0.0.4/32"],
    }
    async with dns_gateway(fake_dns, **settings) as gw:
        out = await gw.send(source=zone.NOPTR_IP, helo="localhost", sender="a@example.org")
        assert out.code("message") == 250
        assert b"Authentication-Results" not in gw.downstream.messages[0]


async def test_ipv6_client(dns_server: Dnsmasq) -> None:
    """An IPv6 client: ip6.arpa PTR lookup (none in the test zone) and nibble-reversed list
    queries."""
    import asyncio
    import socket

    try:
        socket.socket(socket.AF_INET6).close()
    except OSError:
        pytest.skip("no IPv6 on this machine")
    settings = only(**{"fcrdns.action": "reject", "dnsbl.lists": ["bl.test"]})
    with captured_logs() as logs:
        async with dns_gateway(
            dns_server.address, **settings, **{"server.listen": ["[::1]:0"]}
        ) as gw:
            reader, writer = await asyncio.open_connection("::1", gw.port)
            try:
                await reader.readline()
                for line in ("EHLO [IPv6:::1]", "MAIL FROM:<>", f"RCPT TO:<{RCPT}>"):
                    writer.write(line.encode() + b"\r\n")
                    for _ in range(20):  # one reply, possibly multi-line
                        answer = await asyncio.wait_for(reader.readline(), 10)
                        if answer[3:4] != b"-":
                            break
            finally:
                writer.close()
    assert answer.startswith(b"550 5.7.25")
    results = {f["check"]: f["result"] for f in logs.of("check")}
    assert results["dnsbl"] == "pass" and results["fcrdns"] == "fail"
    nibbles = "1." + "0." * 31 + "bl.test"
    assert dns_server.queries(nibbles) >= 1


async def test_refused_client_learns_nothing_about_recipients(
    fake_dns: ZoneNameserver, tmp_path: Path
) -> None:
    """The DNS checks answer before the directory: a listed client gets the same refusal for
    a valid and an unknown recipient."""
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    settings = only(
        **{
            "dnsbl.lists": ["bl.test"],
            "directory.default": "static",
            "directory.static_file": str(users),
        }
    )
    async with dns_gateway(fake_dns, **settings) as gw:
        valid = await gw.send(source=zone.LISTED_IP, rcpt="alice@example.test")
        unknown = await gw.send(source=zone.LISTED_IP, rcpt="nobody@example.test")
        assert valid.replies["rcpt"] == unknown.replies["rcpt"]
        assert valid.code("rcpt") == 554
        assert (await gw.send(rcpt="nobody@example.test")).code("rcpt") == 550


# --- results from the cache --------------------------------------------------------------------


async def test_fcrdns_and_helo_results_are_kept_until_their_answers_expire() -> None:
    server = world(ttl=60)
    now = [1000.0]
    settings = config.build({})
    resolver = fake_resolver(server, clock=lambda: now[0])
    karma = Karma(settings.score)
    fcrdns = FcrdnsCheck(settings.fcrdns, resolver, karma)
    helo = HeloCheck(settings.helo, resolver, karma, ["mx.mailmoat.test"])

    def session() -> SessionState:
        client = Client(zone.GOOD_IP, 25000)
        fcrdns.connect(client)
        helo.helo(client, Helo(zone.GOOD_HELO, True))
        return karma.state(client)

    first = session()  # nothing cached yet: lookups in tasks
    assert IPREV in first.tasks and HELO in first.tasks
    assert (await first.result(IPREV)).result == "pass"
    assert (await first.result(HELO)).failures == []
    asked = server.asked()
    second = session()  # every answer cached: the results at once, and kept
    assert not second.tasks and second.ready(IPREV).name == zone.GOOD_HELO
    assert (len(fcrdns.results), len(helo.results)) == (1, 1)
    now[0] += 59
    third = session()
    assert not third.tasks and third.ready(IPREV) is second.ready(IPREV)
    now[0] += 2  # past the TTL: asked again
    fourth = session()
    assert IPREV in fourth.tasks and HELO in fourth.tasks
    assert (await fourth.result(IPREV)).result == "pass"
    assert server.asked() > asked
    for st in (first, second, third, fourth):
        assert st.client.state is st
        karma.end(st.client)
        assert st.client.state is None and not st.tasks  # released with the session
