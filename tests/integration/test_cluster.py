"""Several nodes as one, end to end: a private redis-server, two `mailmoat serve` nodes sharing
it (`store.backend = "redis"`), a private HAProxy in front built from contrib/haproxy.cfg
(`balance roundrobin`, `send-proxy-v2`, `option smtpchk`). The client binds 127.0.0.77 and
talks only to HAProxy, so each of its connections goes to the other node than the one before:
the nodes see the client's own address in the PROXY header, and its harvest score and
connection rate are counted once for the cluster, not once per node.
"""

from __future__ import annotations

import contextlib
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailmoat.policy.harvest import R_BANNED
from tests.server.test_workers import BODY, Served, served
from tests.support.haproxy import HAProxy, contrib_config, needs_haproxy, running_haproxy
from tests.support.ports import free_port
from tests.support.raw_client import connect, read_all, read_reply
from tests.support.redis import RedisServer, available, redis_server
from tests.support.waiting import wait_until

pytestmark = [
    needs_haproxy,
    pytest.mark.peers,
    pytest.mark.skipif(not available(), reason="redis-server is not installed"),
]

CLIENT = "127.0.0.77"


class Cluster:
    def __init__(self, redis: RedisServer, nodes: list[Served], haproxy: HAProxy) -> None:
        self.redis = redis
        self.nodes = nodes
        self.haproxy = haproxy
        self.port = haproxy.port

    def accepted(self) -> list[int]:
        """Client connections each node admitted (health checks are not counted)."""
        return [n.counter("connections.accepted") for n in self.nodes]

    def heard(self, gauge: str) -> list[int]:
        """What each node heard from the other over Redis's counts channel: `peer_events`
        (connection events, for the rate) or `peer_connections` (open connections now)."""
        return [int(n.stats()["gauges"].get(f"store.redis.{gauge}", 0)) for n in self.nodes]

    def wait_heard(self, gauge: str, want: Callable[[list[int]], bool], what: str) -> None:
        """Admission decides from what a node heard, without asking Redis: the other node's
        counts arrive within SLOTS_REPORT_DELAY and a round trip (docs/several-nodes.md), so
        a test of the cluster-wide limit waits for them before its next connection."""
        wait_until(lambda: want(self.heard(gauge)), what, describe=lambda: self.heard(gauge))

    def delivered(self) -> int:
        return sum(len(list(n.maildir.glob("new/*"))) for n in self.nodes)

    def greeting(self, source: str) -> bytes:
        """The first thing said to a new connection through HAProxy (and all of it when the
        node refuses and closes)."""
        with connect(self.port, source) as s:
            first = read_reply(s)
            return first + read_all(s, 5) if first.startswith(b"421") else first

    def guess(self, source: str, name: str) -> int:
        """One session through HAProxy with one unknown recipient: the RCPT reply code."""
        with smtplib.SMTP("127.0.0.1", self.port, timeout=20, source_address=(source, 0)) as c:
            c.ehlo("client.test")
            c.mail("h@sender.test")
            return c.rcpt(f"{name}@example.test")[0]

    def send(self, source: str) -> list[int]:
        """One good message through HAProxy: every reply code on the way, the last one the
        answer to the message (or to whatever refused it first)."""
        codes: list[int] = []
        try:
            c = smtplib.SMTP(timeout=20, source_address=(source, 0))
            codes.append(c.connect("127.0.0.1", self.port)[0])
        except smtplib.SMTPConnectError as err:
            return [*codes, err.smtp_code]
        except smtplib.SMTPServerDisconnected:
            return [*codes, 0]
        try:
            for step in (
                lambda: c.ehlo("client.test"),
                lambda: c.mail("bob@sender.test"),
                lambda: c.rcpt("alice@example.test"),
                lambda: c.data(BODY),
            ):
                codes.append(step()[0])
                if codes[-1] >= 400:
                    break
            with contextlib.suppress(smtplib.SMTPException, OSError):
                c.quit()
        except smtplib.SMTPServerDisconnected:
            codes.append(0)
        finally:
            c.close()
        return codes


@contextlib.contextmanager
def cluster(tmp_path: Path, **settings: object) -> Iterator[Cluster]:
    users = tmp_path / "recipients"
    users.write_text("alice@example.test\n")
    port = free_port()
    with contextlib.ExitStack() as stack:
        redis = stack.enter_context(redis_server(tmp_path / "redis"))
        common: dict[str, object] = {
            "server.proxy_protocol": ["127.0.0.1/32"],
            "directory.default": "static",
            "directory.static_file": str(users),
            "store.backend": "redis",
            "store.url": redis.url,
            "store.fallback_nodes": 2,
            **settings,
        }
        nodes = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            nodes.append(stack.enter_context(served(tmp_path / name, 1, **common)))
        config = contrib_config(port, [n.port for n in nodes])
        haproxy = stack.enter_context(running_haproxy(tmp_path, config, port))
        for node in nodes:  # HAProxy's checks (rise 2) reached each node: both are up
            wait_until(lambda n=node: n.counter("proxy.local") >= 2, "a node checked up")
        yield Cluster(redis, nodes, haproxy)


def test_a_harvest_split_over_the_nodes_is_banned_at_the_cluster_threshold(
    tmp_path: Path,
) -> None:
    harvest = {
        "harvest.tarpit_after": 4,
        "harvest.threshold": 4,
        "harvest.ban_after": 4,
        "harvest.tarpit_delay": 0.01,
        "harvest.tarpit_max": 0.05,
        "admission.max_rate": 0,
    }
    with cluster(tmp_path, **harvest) as c:
        # three guesses, split by round robin: below the threshold, each told "no such user"
        assert [c.guess(CLIENT, f"g{i}") for i in range(3)] == [550, 550, 550]
        c.guess(CLIENT, "g3")  # the fourth guess in the cluster: two on each node
        assert c.accepted() == [2, 2]
        # a node alone saw two guesses, half its threshold; the cluster saw four: both refuse
        refusals = [c.greeting(CLIENT), c.greeting(CLIENT)]
        assert refusals == [R_BANNED.to_bytes()] * 2, refusals
        wait_until(
            lambda: [n.counter("closed.refused") for n in c.nodes] == [1, 1],
            "each node refused the harvester once",
            describe=lambda: [n.stats()["counters"] for n in c.nodes],
        )
        assert c.greeting("127.0.0.78").startswith(b"220")  # a neighbour still passes


def test_the_connection_rate_holds_across_the_nodes(tmp_path: Path) -> None:
    with cluster(tmp_path, **{"admission.max_rate": 3}) as c:
        for _ in range(3):
            assert c.greeting(CLIENT).startswith(b"220")
        assert sorted(c.accepted()) == [1, 2]
        c.wait_heard("peer_events", lambda e: sorted(e) == [1, 2], "each node heard the other")
        # the fourth in the minute: one node has seen only one of the three before it
        for _ in range(2):  # and both nodes say so
            refused = c.greeting(CLIENT)
            assert refused.startswith(b"421") and b"too many connections" in refused, refused
        wait_until(
            lambda: [n.counter("refused.rate") for n in c.nodes] == [1, 1],
            "each node refused the client once for its rate",
        )
        assert c.greeting("127.0.0.78").startswith(b"220")


def test_mail_flows_while_redis_is_down_and_the_limits_recover(tmp_path: Path) -> None:
    with cluster(tmp_path, **{"admission.max_rate": 3}) as c:
        answers = [c.send("127.0.0.81"), c.send("127.0.0.81")]
        c.redis.shutdown()
        for n in range(6):  # fresh addresses: the rate's fallback does not refuse them
            answers.append(c.send(f"127.0.0.{90 + n // 2}"))
        down = answers[2:]
        assert all(codes[-1] in (250, *range(400, 500)) for codes in answers), answers
        assert not any(code >= 500 for codes in answers for code in codes), answers
        assert sum(codes[-1] == 250 for codes in down) >= 3, down  # mail kept flowing
        accepted = sum(codes[-1] == 250 for codes in answers)
        wait_until(lambda: c.delivered() == accepted, "every 250 in a Maildir")

        c.redis.start()  # back on the same port, empty and without the functions
        wait_until(
            lambda: all(
                n.stats()["gauges"].get("store.redis.breaker_open") == 0
                and n.stats()["gauges"].get("store.redis.feed_synced") == 1
                for n in c.nodes
            ),
            "both nodes use Redis again",
        )
        # the rate holds cluster-wide again: a, b, a admitted, then refused by both
        before = c.heard("peer_events")
        for _ in range(3):
            assert c.greeting(CLIENT).startswith(b"220")
        c.wait_heard(
            "peer_events",
            lambda e: sorted(x - y for x, y in zip(e, before, strict=True)) == [1, 2],
            "each node heard the other's new connections",
        )
        for _ in range(2):
            refused = c.greeting(CLIENT)
            assert refused.startswith(b"421") and b"too many connections" in refused, refused
        assert c.redis.command("FUNCTION", "LIST") != b"*0"
        assert c.delivered() == accepted


def _slots(c: Cluster, ip: str) -> bytes | None:
    """How many nodes hold open connections from `ip` in Redis (`:n`), as Redis says."""
    key = sum(int(part) << (8 * (3 - i)) for i, part in enumerate(ip.split(".")))
    return c.redis.command("HLEN", f"mm:slots:ip:{key}")


def test_the_caps_on_open_connections_hold_across_the_nodes(tmp_path: Path) -> None:
    caps = {"admission.max_per_ip": 2, "admission.max_per_network": 3, "admission.max_rate": 0}
    with cluster(tmp_path, **caps) as c:
        held = [connect(c.port, CLIENT), connect(c.port, CLIENT)]  # one on each node
        try:
            assert [read_reply(s)[:4] for s in held] == [b"220 "] * 2
            assert c.accepted() == [1, 1]
            # each node heard the other's (address and network): 2 slots each
            c.wait_heard("peer_connections", lambda n: n == [2, 2], "each heard the other")
            # a third: the node it reaches holds only one, the cluster two
            refused = c.greeting(CLIENT)
            assert refused.startswith(b"421") and b"from your address" in refused, refused
            # the network's cap: a neighbour is the third of the /24, another the fourth
            held.append(connect(c.port, "127.0.0.78"))
            assert read_reply(held[-1]).startswith(b"220 ")
            c.wait_heard("peer_connections", lambda n: sum(n) == 6, "the neighbour heard of")
            refused = c.greeting("127.0.0.79")
            assert refused.startswith(b"421") and b"from your network" in refused, refused
            # a connection that ends gives its slot back to the cluster
            held.pop(0).close()
            wait_until(lambda: _slots(c, CLIENT) == b":1", "one node holds the client")
            held.pop().close()
            wait_until(lambda: c.greeting(CLIENT).startswith(b"220"), "admitted again", timeout=5)
        finally:
            for s in held:
                s.close()


def test_a_crashed_node_does_not_hold_its_slots_for_ever(tmp_path: Path) -> None:
    caps = {"admission.max_per_ip": 2, "admission.max_rate": 0}
    with cluster(tmp_path, **caps) as c:
        held = [connect(c.port, CLIENT), connect(c.port, CLIENT)]  # one on each node
        try:
            assert [read_reply(s)[:4] for s in held] == [b"220 "] * 2
            wait_until(lambda: _slots(c, CLIENT) == b":2", "both nodes' counts in Redis")
            a, b = c.nodes
            a.proc.kill()  # its connection dies with it, without a word to Redis
            a.proc.wait(10)
            # b stops counting a once its heartbeats stop (REDIS_NODE_ALIVE)
            wait_until(lambda: b.stats()["gauges"]["store.redis.nodes"] == 1, "a seen gone")
            wait_until(lambda: "mx1 is DOWN" in c.haproxy.output(), "HAProxy sends all to b")
            # to b: a's slot stops counting once a is past REDIS_NODE_ALIVE in Redis too
            wait_until(lambda: c.greeting(CLIENT).startswith(b"220"), "a's slot not counted")
            # and from Redis at b's next report (each connection's count goes within
            # SLOTS_REPORT_DELAY, with the live nodes: a's field is dropped then)
            wait_until(
                lambda: c.greeting(CLIENT).startswith(b"220") and _slots(c, CLIENT) == b":1",
                "a's count dropped from Redis",
                describe=lambda: (_slots(c, CLIENT), b.stats()["gauges"]),
            )
        finally:
            for s in held:
                s.close()
