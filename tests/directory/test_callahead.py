"""Call-ahead: probe transactions (never DATA), positive and negative caching, the probe rate
limits, failures as 451, against a scripted fake server and a real Postfix downstream."""

from __future__ import annotations

import asyncio
import re
import smtplib
from pathlib import Path
from typing import Any

from mailmoat import config
from mailmoat.directory.base import Status
from mailmoat.directory.callahead import CallAheadDirectory
from mailmoat.store import MemoryStore
from tests.relay.relay_support import FakeFactory
from tests.support.clock import Clock
from tests.support.gateway import running_gateway
from tests.support.ports import free_port
from tests.support.postfix import PostfixInstance
from tests.support.waiting import wait_for

VALID, UNKNOWN, UNAVAILABLE = Status.VALID, Status.UNKNOWN, Status.UNAVAILABLE


def settings_for(port: int, **callahead: Any) -> config.Settings:
    return config.build(
        {
            "server": {"hostname": "mx.mailmoat.test"},
            "domains": {"local": ["example.test"]},
            "relay": {
                "downstream": f"127.0.0.1:{port}",
                "connect_timeout": 2.0,
                "command_timeout": 2.0,
            },
            "directory": {"default": "callahead"},
            "callahead": {"timeout": 5.0, **callahead},
        }
    )


async def ask(d: CallAheadDirectory, address: str, source: str = "192.0.2.1") -> Status:
    local, _, domain = address.rpartition("@")
    result = d.lookup(local, domain, source)
    assert not isinstance(result, Status)
    return await result


def refuse_unknown(addr: str) -> bytes:
    if addr in ("alice@example.test", "bob@example.test"):
        return b"250 2.1.5 Ok\r\n"
    if addr.startswith("busy"):
        return b"450 4.2.0 try later\r\n"
    return b"550 5.1.1 no such user\r\n"


async def test_probe_is_mail_rcpt_rset_quit_never_data(fake_downstream: FakeFactory) -> None:
    fake = await fake_downstream(rcpt=refuse_unknown)
    d = CallAheadDirectory(settings_for(fake.port), MemoryStore())
    assert await ask(d, "alice@example.test") is VALID
    assert await ask(d, "nobody@example.test") is UNKNOWN
    assert await ask(d, "busy@example.test") is UNAVAILABLE  # 4xx: no verdict, not cached
    verbs = [line.split(b" ")[0].split(b":")[0] for line in fake.lines]
    assert verbs == [b"EHLO", b"MAIL", b"RCPT", b"RSET", b"QUIT"] * 3
    assert b"MAIL FROM:<>" in fake.lines
    assert b"DATA" not in verbs and fake.messages == []
    await d.close()


async def test_answers_are_cached_with_their_own_lifetimes(fake_downstream: FakeFactory) -> None:
    fake = await fake_downstream(rcpt=refuse_unknown)
    clock = Clock()  # the store's: lifetimes pass when the test says, not with the machine's load
    d = CallAheadDirectory(
        settings_for(fake.port, positive_ttl=60, negative_ttl=30), MemoryStore(clock=clock)
    )
    assert await ask(d, "alice@example.test") is VALID
    assert await ask(d, "nobody@example.test") is UNKNOWN
    assert await ask(d, "busy1@example.test") is UNAVAILABLE
    assert d.probes == 3
    assert await ask(d, "alice@example.test") is VALID
    assert await ask(d, "nobody@example.test") is UNKNOWN
    assert d.probes == 3  # both from the cache
    assert await ask(d, "busy1@example.test") is UNAVAILABLE
    assert d.probes == 4  # a temporary failure is asked again
    clock.now += 35  # the negative answer has expired, the positive one not
    assert await ask(d, "alice@example.test") is VALID
    assert d.probes == 4
    assert await ask(d, "nobody@example.test") is UNKNOWN
    assert d.probes == 5
    clock.now += 30  # the positive one too
    assert await ask(d, "alice@example.test") is VALID
    assert d.probes == 6
    await d.close()


async def test_probe_limits_total_and_per_source_and_concurrent_askers_share_a_probe(
    fake_downstream: FakeFactory,
) -> None:
    fake = await fake_downstream(rcpt=refuse_unknown, command_delay=0.1)
    d = CallAheadDirectory(
        settings_for(fake.port, probes_per_minute=5, source_probes_per_minute=3, concurrency=2),
        MemoryStore(),
    )
    # ten sessions ask for the same address at once: one probe
    assert await asyncio.gather(*(ask(d, "alice@example.test") for _ in range(10))) == [VALID] * 10
    assert d.probes == 1
    # one source may cause three probes a minute (one used above)
    answers = [await ask(d, f"guess{i}@example.test") for i in range(4)]
    assert answers == [UNKNOWN, UNKNOWN, UNAVAILABLE, UNAVAILABLE]
    assert d.probes == 3 and d.limited == 2
    # other sources share what is left of the five a minute
    others = await asyncio.gather(
        *(ask(d, f"x{i}@example.test", f"198.51.100.{i}") for i in range(5))
    )
    assert sorted(s.value for s in others) == ["unavailable"] * 3 + ["unknown"] * 2
    assert d.probes == 5
    assert fake.max_concurrent <= 2
    assert sum(1 for line in fake.lines if line.startswith(b"RCPT")) == 5
    await d.close()


async def test_unreachable_or_silent_server_is_unavailable_never_valid(
    fake_downstream: FakeFactory,
) -> None:
    d = CallAheadDirectory(settings_for(free_port()), MemoryStore())
    assert await ask(d, "alice@example.test") is UNAVAILABLE
    silent = await fake_downstream(greeting=None)
    d = CallAheadDirectory(settings_for(silent.port, timeout=0.5), MemoryStore())
    assert await ask(d, "alice@example.test") is UNAVAILABLE
    refusing = await fake_downstream(mail=lambda: b"553 5.7.1 sender refused\r\n")
    d = CallAheadDirectory(settings_for(refusing.port), MemoryStore())
    assert await ask(d, "alice@example.test") is UNAVAILABLE


# --- against a real Postfix downstream -------------------------------------------------------


def probe_sessions(pf: PostfixInstance) -> list[str]:
    """Postfix's per-session command summaries ('disconnect from ... ehlo=1 mail=1 ...')."""
    return re.findall(r"disconnect from \S+ (.*)", pf.log_text())


async def wait_sessions(pf: PostfixInstance, n: int) -> list[str]:
    await wait_for(
        lambda: len(probe_sessions(pf)) >= n,
        f"{n} sessions in the Postfix log",
        interval=0.05,
        describe=pf.log_tail,
    )
    return probe_sessions(pf)


async def test_callahead_against_postfix_caches_and_limits(postfix_instance: Any) -> None:
    pf: PostfixInstance = postfix_instance.downstream(users=("alice", "bob"))
    d = CallAheadDirectory(
        settings_for(pf.port, probes_per_minute=4, negative_ttl=600, positive_ttl=600),
        MemoryStore(),
    )
    assert await ask(d, "alice@example.test") is VALID
    assert await ask(d, "nobody@example.test") is UNKNOWN
    for _ in range(3):  # cached: Postfix is not asked again
        assert await ask(d, "alice@example.test") is VALID
        assert await ask(d, "nobody@example.test") is UNKNOWN
    assert await ask(d, "bob@example.test") is VALID
    assert await ask(d, "guess1@example.test") is UNKNOWN
    # the fifth probe in a minute is not sent: 451 instead, whatever the address
    assert await ask(d, "guess2@example.test") is UNAVAILABLE
    assert await ask(d, "carol@example.test") is UNAVAILABLE
    sessions = await wait_sessions(pf, 4)
    await asyncio.sleep(0.2)
    sessions = probe_sessions(pf)
    assert len(sessions) == 4, pf.log_tail()
    for s in sessions:  # each: EHLO, MAIL, RCPT, RSET, QUIT; no DATA
        assert "ehlo=1 mail=1 rcpt=" in s and "rset=1 quit=1" in s and "data" not in s
    rejects = re.findall(r"NOQUEUE: reject: RCPT from .*<nobody@example\.test>", pf.log_text())
    assert len(rejects) == 1
    await d.close()


def test_gateway_with_callahead_refuses_unknown_and_delivers_valid(
    postfix_instance: Any, tmp_path: Path
) -> None:
    pf: PostfixInstance = postfix_instance.downstream(users=("alice", "bob"))
    overrides = {
        "relay.downstream": f"127.0.0.1:{pf.port}",
        "directory.default": "callahead",
        "harvest.exempt_networks": ["127.0.0.0/8"],
    }
    with running_gateway(tmp_path / "md", **overrides) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=20) as c:
            c.ehlo("client.test")
            refused = c.sendmail(
                "s@sender.test",
                ["alice@example.test", "nobody@example.test", "bob@example.test"],
                b"Subject: hi\r\n\r\nhello\r\n",
            )
            assert list(refused) == ["nobody@example.test"]
            assert refused["nobody@example.test"][0] == 550
    assert len(pf.wait_for_messages("alice")) == 1
    assert len(pf.wait_for_messages("bob")) == 1
    log = pf.log_text()
    # the only time Postfix heard of nobody@ was the probe, refused at RCPT
    (line,) = [x for x in log.splitlines() if "nobody@example.test" in x]
    assert "NOQUEUE: reject: RCPT from" in line and "from=<>" in line


async def test_routing_forms_are_never_probed_nor_vouched_for(
    fake_downstream: FakeFactory,
) -> None:
    """A server inside that accepts every address (as a trusting Postfix does for a routing
    form it means to relay) is never asked about sender-specified routing."""
    fake = await fake_downstream(rcpt=lambda addr: b"250 2.1.5 Ok\r\n")
    d = CallAheadDirectory(settings_for(fake.port), MemoryStore())
    for local in ("victim%outside.test", "outside.test!victim", '"victim@outside.test"'):
        assert d.lookup(local, "example.test", "192.0.2.1") is UNKNOWN
    assert d.probes == 0 and fake.lines == []
    assert await ask(d, "alice@example.test") is VALID  # control: an ordinary address is probed
    assert d.probes == 1
    await d.close()
