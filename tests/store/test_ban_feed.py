"""The ban feed's messages (`set <key> <ms> <value>`, `del <key>`) and what the ban list makes
of them: named malformed cases and a fuzz test. Whoever can publish on the channel is trusted
with bans, not with crashing a node or banning more than an administrator could."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailmoat import config
from mailmoat.limits import LONGEST_BAN
from mailmoat.policy.bans import BanList
from mailmoat.server import eager
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from mailmoat.store.ban_feed import BanFeed
from mailmoat.store.redis_client import connect


def feed() -> tuple[BanFeed, MemoryStore, list[tuple[str, float | None]]]:
    local = MemoryStore()
    heard: list[tuple[str, float | None]] = []
    client = connect("redis://127.0.0.1:1/0")  # never used: apply() reads no Redis
    return BanFeed(client, local, lambda k, s: heard.append((k, s))), local, heard


async def test_a_ban_set_and_lifted() -> None:
    f, local, heard = feed()
    await f.apply(b"set\tban:192.0.2.1\t5000\t1")
    left = await local.ttl("ban:192.0.2.1")
    assert left is not None and 4 < left <= 5
    assert heard == [("ban:192.0.2.1", 5.0)]
    await f.apply("del\tban:192.0.2.1")
    assert await local.ttl("ban:192.0.2.1") is None
    assert heard[-1] == ("ban:192.0.2.1", None)
    assert f.received == 2


async def test_malformed_messages_are_ignored() -> None:
    f, local, heard = feed()
    for bad in (
        b"",
        b"set",
        b"set\tban:192.0.2.1",  # no TTL, no value
        b"set\tban:192.0.2.1\t5000",  # no value
        b"set\tban:192.0.2.1\tsoon\t1",  # TTL not a number
        b"set\tban:192.0.2.1\t-5\t1",  # negative TTL
        "set\tban:192.0.2.1\t\u00b2\t1".encode(),  # a digit to str.isdigit, not to int()
        b"set\trate:192.0.2.1\t5000\t1",  # not a ban key
        b"del\tstrikes:192.0.2.1",  # not a ban key
        b"zap\tban:192.0.2.1",  # unknown operation
        b"\xff\xfe\tban:\xff\t1\t1",  # not UTF-8
    ):
        await f.apply(bad)
    assert heard == [] and len(local) == 0 and f.received == 0


def ban_list() -> BanList:
    return BanList(config.load(None, {}).bans, MemoryStore(), Stats())


def test_the_ban_list_checks_what_the_feed_says() -> None:
    bans = ban_list()
    bans.learn("192.0.2.9", 1e12)  # longer than any ban: cut to LONGEST_BAN
    assert bans.banned_now("192.0.2.9")
    assert bans._banned.until("192.0.2.9") <= bans.clock() + LONGEST_BAN
    bans.learn("net:0.0.0.0/0", 60)  # wider than an administrator may ban: ignored
    bans.learn("net:not-a-network", 60)
    bans.learn("not-an-address", 60)
    assert not bans._networks
    bans.learn("net:198.51.100.0/24", 60)
    assert "198.51.100.0/24" in bans._networks
    bans.learn("net:198.51.100.0/24", None)
    assert not bans._networks
    bans.learn("192.0.2.9", None)
    assert not bans.banned_now("192.0.2.9")


@given(st.binary(max_size=200))
def test_fuzz_feed_messages(data: bytes) -> None:
    f, local, heard = feed()
    assert eager.start(f.apply(data)) is None  # the memory store never waits
    assert all(key.startswith("ban:") for key, _ in heard)
    assert len(local) <= 1


@given(st.text(max_size=60), st.one_of(st.none(), st.floats(allow_nan=False)))
def test_fuzz_learned_bans(name: str, seconds: float | None) -> None:
    bans = ban_list()
    bans.learn(name, seconds)
    for net in bans._networks:
        assert not net.endswith(("/0", "/1", "/2", "/3", "/4", "/5", "/6", "/7"))
