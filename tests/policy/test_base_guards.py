"""Promises of policy/base.py pinned where mutation testing (scripts/mutation over it) found
nothing holding them: a worker skips only the connect hook of the defences the supervisor ran,
a slot keeps its result for the session unless declared per transaction, and an IPv4-mapped
address is taken as the IPv4 one."""

from __future__ import annotations

import time
from ipaddress import IPv4Address, ip_address

from mailmoat import config
from mailmoat.policy.base import Check, Client, HookResult, Pipeline, Slot, plain_ip
from mailmoat.policy.results import ALLOWLISTED, IPREV
from mailmoat.policy.score import Karma
from mailmoat.smtp.events import Helo, RcptTo, Rejected
from mailmoat.smtp.replies import reply
from tests.milter.test_session import CONTINUE, connected, service
from tests.support import milter_peer as mta

EV = RcptTo(address="a@example.test", domain="example.test")
EPSILON = 0.01
"""Slack for timer and clock granularity in the lower bounds."""


class Seen(Check):
    """Records which of its hooks ran."""

    def __init__(self, name: str, seen: list[str]) -> None:
        self.name, self.seen = name, seen

    def connect(self, client: Client) -> HookResult:
        self.seen.append(f"{self.name} connect")
        return None

    def helo(self, client: Client, event: Helo) -> HookResult:
        self.seen.append(f"{self.name} helo")
        return None

    def rcpt(self, client: Client, event: RcptTo) -> HookResult:
        self.seen.append(f"{self.name} rcpt")
        return None

    def rejected(self, client: Client, event: Rejected) -> HookResult:
        self.seen.append(f"{self.name} rejected")
        return None

    async def start(self) -> None:
        self.seen.append(f"{self.name} start")

    async def close(self) -> None:
        self.seen.append(f"{self.name} close")


def test_a_worker_skips_only_the_connect_hook_of_the_defences_admitted_elsewhere() -> None:
    """The supervisor ran the front defences' connect hooks; in the worker their other hooks
    (strikes at `rejected`, rates at RCPT...) must still run, and the other checks' connect."""
    seen: list[str] = []
    front, local = Seen("front", seen), Seen("local", seen)
    p = Pipeline([front, local], skip_connect=[front])
    client = Client("192.0.2.1", 25)
    for stage, args in [
        ("connect", ()),
        ("helo", (Helo("client.example", True),)),
        ("rcpt", (EV,)),
        ("rejected", (Rejected("too_many_errors", reply(421, "4.7.0", "x")),)),
    ]:
        assert p.runs(stage)
        assert p.run(stage, client, *args) is None
    assert not p.runs("mail") and not p.runs("data")  # no check looks: the milter skips them
    assert seen == [
        "local connect",
        *("front helo", "local helo", "front rcpt", "local rcpt"),
        *("front rejected", "local rejected"),
    ]


def test_a_slot_keeps_its_result_for_the_session_unless_declared_per_transaction() -> None:
    """The client's results (FCrDNS, the allow list, HELO) hold for every transaction of the
    session; only the message's (SPF, DKIM, DMARC) are emptied at the next MAIL FROM."""
    karma = Karma(config.build({}).score)
    st = karma.state(Client("192.0.2.1", 25))
    session, message = Slot[int]("session"), Slot[int]("message", per_transaction=True)
    st.set(session, 1)
    st.set(message, 2)
    st.new_transaction()
    assert (st.ready(session), st.ready(message)) == (1, None)
    assert not IPREV.per_transaction and not ALLOWLISTED.per_transaction
    karma.end(st.client)


def test_an_ipv4_mapped_address_is_the_ipv4_one_and_others_are_kept() -> None:
    assert plain_ip(ip_address("::ffff:192.0.2.1")) == IPv4Address("192.0.2.1")
    for text in ("2001:db8::1", "192.0.2.1", "::1"):
        assert plain_ip(ip_address(text)) == ip_address(text)


async def test_the_pipeline_starts_every_check_in_order_and_closes_them_in_reverse() -> None:
    seen: list[str] = []
    p = Pipeline([Seen("a", seen), Seen("b", seen)])
    await p.start()
    await p.close()
    assert seen == ["a start", "b start", "b close", "a close"]


def test_untag_removes_that_mark_only() -> None:
    client = Client("192.0.2.1", 25)
    for name in ("a", "m", "z"):
        client.tag(name)
    assert client.untag("m") and not client.untag("m")
    assert (client.has("a"), client.has("m"), client.has("z")) == (True, False, True)


def test_a_link_local_client_is_matched_without_its_zone() -> None:
    """The socket names a link-local peer with its zone ("fe80::1%eth0"): the client's address
    for bans, rates and networks is the address alone."""
    client = Client("fe80::1%eth0", 25)
    assert client.ip == ip_address("fe80::1") and str(client.ip) == "fe80::1"


async def test_a_milter_clients_refusals_count_from_zero_for_the_tarpit() -> None:
    """The milter counts a client's refusals up from `Client.errors`' default (the gateway sets
    it from its engine instead): with `tarpit.error_threshold = 1`, the second refusal is the
    first one held back `error_delay` (a lower bound only)."""
    delay = 0.5
    overrides = {"tarpit.error_threshold": 1, "tarpit.error_delay": delay, "harvest.enabled": False}
    async with service(**overrides) as milter:
        peer = await connected(milter)
        assert await peer.ask(mta.strings(b"M", "<a@sender.test>")) == CONTINUE
        refused = mta.macros(b"R", **{"{rcpt_mailer}": "error", "{rcpt_host}": "5.1.1"})
        await peer.send(refused)
        assert await peer.ask(mta.strings(b"R", "<nobody1@example.test>")) == CONTINUE
        await peer.send(refused)
        started = time.monotonic()
        assert await peer.ask(mta.strings(b"R", "<nobody2@example.test>")) == CONTINUE
        assert time.monotonic() - started >= delay - EPSILON
        await peer.close()
