"""One test per setting that no other test exercised: each changes the setting (by its dotted
key, through config.load, as an administrator would) and shows the behaviour change. The DNS
check settings are in tests/policy/test_settings_dns.py, the directory back ends' in
tests/directory/test_settings_directory.py, the relay client's in tests/relay/."""

from __future__ import annotations

import asyncio
import os
import smtplib
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from mailmoat import config
from mailmoat.assembly import Defences
from mailmoat.directory import Status, build_directories
from mailmoat.policy.base import Client, Decision
from mailmoat.smtp.replies import Reply
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.policy.test_harvest import Rig
from tests.smtp.test_connection import DATA, EHLO, MAIL, session
from tests.support.gateway import clocked_gateway, running_gateway
from tests.support.raw_client import connect, read_all, read_line, read_reply


def smtp(**dotted: Any) -> dict[str, Any]:
    """The engine's limits as config.load makes them from dotted keys."""
    return config.load(None, dotted).smtp.model_dump()


def wait_for(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# --- smtp.* ------------------------------------------------------------------------------------


def test_smtp_max_local_part() -> None:
    long_local = b"MAIL FROM:<" + b"a" * 100 + b"@example.org>\r\n"
    refused = session(EHLO + long_local, **smtp()).codes[1]
    assert refused.startswith("501"), refused
    allowed = session(EHLO + long_local, **smtp(**{"smtp.max_local_part": 128})).codes[1]
    assert allowed == "250 2.1.0"


def test_smtp_max_domain_is_255_octets() -> None:
    """smtp.max_domain has one allowed value (RFC 5321's 255); the bound holds exactly."""
    assert config.load(None, {}).smtp.max_domain == 255
    with pytest.raises(config.ConfigError, match=r"smtp\.max_domain"):
        config.load(None, {"smtp.max_domain": 300})
    label = "a" * 63
    domain_255 = ".".join([label, label, label, "a" * 61, "t"])  # 63*3 + 61 + 1 + 4 dots
    assert len(domain_255) == 255
    limits = smtp(**{"smtp.max_path": 1024})
    ok = session(EHLO + f"MAIL FROM:<a@{domain_255}>\r\n".encode(), **limits).codes[1]
    assert ok == "250 2.1.0"
    too_long = session(EHLO + f"MAIL FROM:<a@{domain_255}x>\r\n".encode(), **limits).codes[1]
    assert too_long.startswith("501"), too_long


def test_smtp_max_text_line() -> None:
    line = b"x" * 1500 + b"\r\n"
    tx = EHLO + MAIL + b"RCPT TO:<bob@example.net>\r\n" + DATA + line + b".\r\n"
    assert session(tx, **smtp()).codes[-1].startswith("5"), "1502-octet line taken by default"
    longer = session(tx, **smtp(**{"smtp.max_text_line": 2000}))
    assert longer.codes[-1] == "250 2.0.0"
    assert longer.content == line


# --- admission.ipv6_prefix, harvest.ipv4_prefix / ipv6_prefix ----------------------------------


def _admission(**dotted: Any) -> Any:
    settings = config.load(
        None,
        {
            "server.hostname": "mx.test",
            "admission.max_per_network": 1,
            "admission.max_rate": 0,
            "bans.strikes": 0,
            **dotted,
        },
    )
    return Defences(settings, Stats(), MemoryStore(), time.monotonic).admission


@pytest.mark.parametrize(("prefix", "shared"), [(64, False), (48, True)])
def test_admission_ipv6_prefix(prefix: int, shared: bool) -> None:
    adm = _admission(**{"admission.ipv6_prefix": prefix})
    first = adm.connect(Client("2001:db8:0:1::1", 1))
    if asyncio.iscoroutine(first):
        first.close()
    second = adm.connect(Client("2001:db8:0:2::1", 1))  # another /64, the same /48
    if isinstance(second, Decision):  # a refusal may carry its reply in a Decision
        second = second.reply
    refused = isinstance(second, Reply)
    if not refused and asyncio.iscoroutine(second):
        second.close()
    assert refused is shared
    if shared:
        assert second.code == 421 and "network" in second.text


@pytest.mark.parametrize(
    ("setting", "prefix", "a", "b"),
    [
        ("ipv4_prefix", 16, "192.0.2.7", "192.0.3.7"),
        ("ipv6_prefix", 32, "2001:db8:1::1", "2001:db8:2::1"),
    ],
)
async def test_harvest_network_prefix(setting: str, prefix: int, a: str, b: str) -> None:
    """harvest.ipv4_prefix / harvest.ipv6_prefix group clients into one network score: with the
    wider prefix the neighbour b inherits a's unknown recipients; with the default it does not."""
    assert f"harvest.{setting}" in {f"harvest.{n}" for n in config.HarvestSettings.model_fields}
    for wide in (False, True):
        rig = Rig(**({setting: prefix} if wide else {}))
        for i in range(3):
            await rig.rcpt(Client(a, 1), f"nobody{i}@example.test")
        _, net = await rig.detector.scores(Client(b, 1))
        assert net == (3 if wide else 0)


# --- pregreet.pass_ttl / fail_ttl --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _greeting_held(port: int, src: str, wait: float) -> bool:
    with connect(port, src) as s:
        started = time.monotonic()
        assert read_line(s).startswith(b"220 ")
        took = time.monotonic() - started
        s.sendall(b"EHLO mta.test\r\n")
        assert read_reply(s).startswith(b"250")
    return took >= wait * 0.8


def test_pregreet_pass_ttl(tmp_path: Path) -> None:
    clock = Clock()
    settings = {"pregreet.wait": 0.3, "pregreet.pass_ttl": 100.0}
    with clocked_gateway(tmp_path / "md", clock, **settings) as gw:
        assert _greeting_held(gw.port, "127.0.40.1", 0.3)  # new: held
        assert wait_for(lambda: gw.gateway.stats.get("pregreet.passed") == 1)
        clock.now += 99
        assert not _greeting_held(gw.port, "127.0.40.1", 0.3)  # remembered as passed
        clock.now += 2  # pass_ttl is over: a stranger again
        assert _greeting_held(gw.port, "127.0.40.1", 0.3)


def test_pregreet_fail_ttl(tmp_path: Path) -> None:
    clock = Clock()
    # no suspect delay: the talker's strike would hold its greeting 5 s more
    settings = {"pregreet.wait": 0.3, "pregreet.fail_ttl": 50.0, "tarpit.suspect_delay": 0}
    refusal = b"421 4.7.0 mx.mailmoat.test Error: you talked before the greeting"
    with clocked_gateway(tmp_path / "md", clock, **settings) as gw:
        with connect(gw.port, "127.0.41.1") as s:
            s.sendall(b"EHLO bot.test\r\n")
            assert read_all(s).startswith(b"554 5.5.0")
        assert wait_for(lambda: gw.gateway.stats.get("pregreet.failed") == 1)
        clock.now += 49
        with connect(gw.port, "127.0.41.1") as s:
            assert read_all(s).startswith(refusal)
        clock.now += 2  # fail_ttl is over: it gets a held greeting again, not a refusal
        assert _greeting_held(gw.port, "127.0.41.1", 0.3)


# --- stress.command / stress.data --------------------------------------------------------------

STRESSED = {
    "admission.max_connections": 10,
    "stress.start_at": 0.1,  # on above one connection
    "stress.stop_at": 0.1,
    "stress.hold": 60.0,
    "timeouts.command": 60.0,
    "timeouts.data": 60.0,
}
TIMEOUT = b"421 4.4.2 Error: timeout exceeded, closing connection\r\n"


def _stressed(gw: Any, src: str) -> list[socket.socket]:
    load = [connect(gw.port, f"{src}{i}") for i in (1, 2)]
    for s in load:
        assert read_line(s).startswith(b"220 ")
    assert wait_for(lambda: gw.gateway.stress.active)
    return load


@pytest.mark.parametrize("stage", ["command", "data"])
def test_stress_command_and_data_timeouts(tmp_path: Path, stage: str) -> None:
    """In stress mode an idle client is cut after stress.command (after a reply) or stress.data
    (silent in DATA) instead of the 60 s of timeouts.*."""
    with running_gateway(tmp_path / "md", **{**STRESSED, f"stress.{stage}": 0.5}) as gw:
        load = _stressed(gw, "127.0.42.")
        with connect(gw.port, "127.0.42.9") as s:
            assert read_line(s).startswith(b"220 ")
            s.sendall(b"EHLO mta.test\r\n")
            assert read_reply(s).startswith(b"250")
            if stage == "data":
                for line in (b"MAIL FROM:<a@b.test>", b"RCPT TO:<x@example.test>", b"DATA"):
                    s.sendall(line + b"\r\n")
                    assert read_reply(s)[:1] in (b"2", b"3")
                s.sendall(b"Subject: slow\r\n")
            got = read_all(s, 10)
        assert got.endswith(TIMEOUT), got
        for s in load:
            s.close()


def test_stress_timeouts_do_not_apply_outside_stress_mode(tmp_path: Path) -> None:
    """The control: with one client (no stress) the same 0.5 s values do not cut it."""
    with running_gateway(tmp_path / "md", **{**STRESSED, "stress.command": 0.5}) as gw:
        with connect(gw.port, "127.0.43.1") as s:
            assert read_line(s).startswith(b"220 ")
            s.sendall(b"EHLO mta.test\r\n")
            assert read_reply(s).startswith(b"250")
            s.settimeout(1.5)
            with pytest.raises(TimeoutError):
                s.recv(100)
        assert not gw.gateway.stress.active


# --- store.backend / store.max_keys ------------------------------------------------------------


def test_store_backend() -> None:
    from mailmoat.store import MemoryStore, open_store
    from mailmoat.store.redis_store import RedisStore

    with pytest.raises(config.ConfigError, match=r"store\.backend"):
        config.load(None, {"store.backend": "sqlite"})
    assert isinstance(open_store(config.load(None, {}).store), MemoryStore)
    shared = open_store(config.load(None, {"store.backend": "redis"}).store)
    assert isinstance(shared, RedisStore)  # connects on first use


async def test_store_max_keys_bounds_the_gateway_store(tmp_path: Path) -> None:
    from mailmoat.server.gateway import Gateway

    settings = config.load(
        None,
        {
            "server.listen": ["127.0.0.1:0"],
            "server.hostname": "mx.test",
            "maildir.path": str(tmp_path / "md"),
            "store.max_keys": 100,
        },
    )
    gw = Gateway(settings)
    assert isinstance(gw.store, MemoryStore)
    for i in range(500):
        await gw.store.set(f"k{i}", "v", 60)
    assert len(gw.store._data) <= 100
    assert await gw.store.get("k499") == "v" and await gw.store.get("k0") is None


# --- directory.* (the static file; the same Directories front serves LDAP and call-ahead) -----


def _directories(tmp_path: Path, text: str, **dotted: Any) -> Any:
    path = tmp_path / "recipients"
    path.write_text(text)
    settings = config.load(
        None,
        {
            "domains.local": ["example.test"],
            "directory.default": "static",
            "directory.static_file": str(path),
            **dotted,
        },
    )
    return build_directories(settings, MemoryStore()), path


async def _status(dirs: Any, address: str) -> Status:
    result = dirs.lookup(address, "192.0.2.1")
    return await result if asyncio.iscoroutine(result) or asyncio.isfuture(result) else result


async def test_directory_recipient_delimiter(tmp_path: Path) -> None:
    for delimiter, expected in (("", Status.UNKNOWN), ("+", Status.VALID)):
        dirs, _ = _directories(
            tmp_path, "alice@example.test\n", **{"directory.recipient_delimiter": delimiter}
        )
        for d in dirs.directories:
            await d.start()
        try:
            assert await _status(dirs, "alice+news@example.test") is expected
            assert await _status(dirs, "bob+news@example.test") is Status.UNKNOWN
        finally:
            for d in dirs.directories:
                await d.close()


async def test_directory_always_valid(tmp_path: Path) -> None:
    for always, expected in ((["postmaster"], Status.UNKNOWN), (["abuse"], Status.VALID)):
        dirs, _ = _directories(
            tmp_path, "alice@example.test\n", **{"directory.always_valid": always}
        )
        for d in dirs.directories:
            await d.start()
        try:
            assert await _status(dirs, "abuse@example.test") is expected
            assert await _status(dirs, "Abuse@example.test") is expected
        finally:
            for d in dirs.directories:
                await d.close()


async def test_directory_max_entries(tmp_path: Path) -> None:
    text = "".join(f"user{i}@example.test\n" for i in range(5))
    dirs, _ = _directories(tmp_path, text, **{"directory.max_entries": 10})
    [static] = dirs.directories
    await static.start()
    assert await _status(dirs, "user4@example.test") is Status.VALID
    await static.close()
    dirs, _ = _directories(tmp_path, text, **{"directory.max_entries": 3})
    [static] = dirs.directories
    with pytest.raises(Exception, match=r"directory\.max_entries"):
        await static.start()
    await static.close()


async def test_directory_static_check_interval(tmp_path: Path) -> None:
    """A change to the file is picked up within the interval: with 0.1 s at once, with an hour
    not within the same wait."""
    for interval, picked_up in ((0.1, True), (3600.0, False)):
        dirs, path = _directories(
            tmp_path, "alice@example.test\n", **{"directory.static_check_interval": interval}
        )
        [static] = dirs.directories
        await static.start()
        try:
            assert await _status(dirs, "bob@example.test") is Status.UNKNOWN
            tmp = path.with_suffix(".new")
            tmp.write_text("alice@example.test\nbob@example.test\n")
            os.utime(tmp, (time.time() + 5, time.time() + 5))  # a new mtime for sure
            os.replace(tmp, path)
            deadline = time.monotonic() + 2.0
            seen = False
            while time.monotonic() < deadline and not seen:
                seen = await _status(dirs, "bob@example.test") is Status.VALID
                await asyncio.sleep(0.05)
            assert seen is picked_up
        finally:
            await static.close()


# --- smtp.vrfy_reply end to end ----------------------------------------------------------------


@pytest.mark.parametrize(("setting", "code"), [("252", 252), ("502", 502)])
def test_smtp_vrfy_reply(tmp_path: Path, setting: str, code: int) -> None:
    with running_gateway(tmp_path / "md", **{"smtp.vrfy_reply": setting}) as gw:
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.verify("alice@example.test")[0] == code
            assert c.expn("staff")[0] == code
