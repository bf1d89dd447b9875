"""The other nodes' admission counts as one node hears them (`store.peer_counts`): the messages
of Redis's counts channel, malformed ones ignored, and every table bounded."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.limits import PEER_COUNTS_MAX, PEER_EVENTS_MAX, PEER_FLOOR_HOLD
from mailmoat.store.peer_counts import PeerCounts


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_open_connections_per_node_are_summed_and_a_zero_removes() -> None:
    peers = PeerCounts("me")
    peers.apply(b"slots\tmm:slots:ip:1\tb\t2")
    peers.apply("slots\tmm:slots:ip:1\tc\t1")
    assert peers.open("slots:ip:1") == 3
    peers.apply(b"slots\tmm:slots:ip:1\tb\t1")  # absolute: replaces b's count
    assert peers.open("slots:ip:1") == 2
    peers.apply(b"slots\tmm:slots:ip:1\tb\t0")
    peers.apply(b"slots\tmm:slots:ip:1\tc\t0")
    assert peers.open("slots:ip:1") == 0 and peers.connections() == 0
    assert peers.received == 5


def test_events_count_in_their_window_and_expire() -> None:
    clock = Clock()
    peers = PeerCounts("me", clock)
    peers.apply(b"hit\tmm:rate:192.0.2.1\tb\t2\t60000")
    clock.now += 30
    peers.apply(b"hit\tmm:rate:192.0.2.1\tc\t1\t60000")
    assert peers.events("rate:192.0.2.1", 60) == 3
    assert peers.events_heard == 3
    clock.now += 31  # the first two are past the window
    assert peers.events("rate:192.0.2.1", 60) == 1


def test_this_nodes_own_messages_are_not_counted_twice() -> None:
    peers = PeerCounts("me")
    peers.apply(b"slots\tmm:slots:ip:1\tme\t4")
    peers.apply(b"hit\tmm:rate:x\tme\t4\t60000")
    assert peers.open("slots:ip:1") == 0 and peers.events("rate:x", 60) == 0
    assert peers.received == 0


MALFORMED = {
    "empty": b"",
    "no fields": b"slots",
    "too few": b"slots\tmm:slots:ip:1\tb",
    "no prefix": b"slots\tslots:ip:1\tb\t1",
    "negative": b"slots\tmm:slots:ip:1\tb\t-1",
    "not a number": b"slots\tmm:slots:ip:1\tb\t1x",
    "unicode digits": "slots\tmm:slots:ip:1\tb\t\u0661".encode(),
    "huge": b"slots\tmm:slots:ip:1\tb\t99999999999",
    "slots with a window": b"slots\tmm:slots:ip:1\tb\t1\t60000",
    "hit without a window": b"hit\tmm:rate:x\tb\t1",
    "hit of no event": b"hit\tmm:rate:x\tb\t0\t60000",
    "hit in no window": b"hit\tmm:rate:x\tb\t1\t0",
    "unknown kind": b"set\tmm:ban:x\tb\t1",
    "not UTF-8": b"slots\tmm:slots:ip:\xff\tb\t1\xfe",
}


def test_malformed_messages_are_ignored() -> None:
    peers = PeerCounts("me")
    for name, data in MALFORMED.items():
        peers.apply(data)
        assert peers.received == 0, name
    assert peers.connections() == 0 and peers.events_heard == 0


def test_one_message_adds_at_most_peer_events_max() -> None:
    peers = PeerCounts("me")
    peers.apply(f"hit\tmm:rate:x\tb\t{PEER_EVENTS_MAX * 5}\t60000".encode())
    assert peers.events("rate:x", 60) == PEER_EVENTS_MAX


def test_keys_are_bounded_and_a_dropped_count_is_a_floor_for_a_while() -> None:
    clock = Clock()
    peers = PeerCounts("me", clock)
    for i in range(PEER_COUNTS_MAX + 10):
        peers.apply(f"slots\tmm:slots:ip:{i}\tb\t1".encode())
    assert peers.connections() == PEER_COUNTS_MAX and peers.dropped == 10
    assert peers.open("slots:ip:0") == 1  # dropped for room: counted, never under-counted
    assert peers.open("slots:ip:any") == 1  # so is every address past the bound, at most 1
    assert peers.open("slots:net:1") == 0  # the floor is per kind
    clock.now += 2 * PEER_FLOOR_HOLD  # the nodes sent their counts again meanwhile (none here)
    assert peers.open("slots:ip:0") == 0 and peers.open(f"slots:ip:{PEER_COUNTS_MAX + 9}") == 1


def test_an_address_holding_connections_survives_ten_thousand_other_keys() -> None:
    """The red-team repro: other nodes report 10,000 networks, one connection each; the
    address holding 20 is still counted in full (the fewest connections go first)."""
    peers = PeerCounts("B")
    peers.apply("slots\tmm:slots:ip:3221225991\tA\t20")
    for i in range(10_000):
        peers.apply(f"slots\tmm:slots:ip:-{i + 1}\tA\t1")
    assert peers.open("slots:ip:3221225991") == 20


def test_a_key_updated_lately_survives_ten_thousand_other_keys() -> None:
    """Among keys of the same count the one updated least lately goes first: a count its
    node sends again (every SLOTS_REFRESH) outlives 10,000 keys reported meanwhile."""
    clock = Clock()
    peers = PeerCounts("me", clock)
    peers.apply(b"slots\tmm:slots:ip:1\tb\t1")  # held, sent again now and then
    peers.apply(b"slots\tmm:slots:ip:2\tb\t1")  # never sent again
    for i in range(10_000):
        if i % 1_000 == 0:
            peers.apply(b"slots\tmm:slots:ip:1\tb\t1")
        peers.apply(f"slots\tmm:slots:ip:-{i + 1}\tc\t1".encode())
    clock.now += 2 * PEER_FLOOR_HOLD  # no floor left: what is held answers alone
    assert peers.open("slots:ip:1") == 1 and peers.open("slots:ip:2") == 0


KEYS = [f"slots:ip:{i}" for i in range(8)] + ["slots:net:0", "slots:net:1"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(KEYS), st.sampled_from(["b", "c", "d"]), st.integers(0, 4)),
        max_size=60,
    ),
    st.integers(1, 6),
)
def test_past_the_bound_a_count_is_never_under_counted(
    reports: list[tuple[str, str, int]], max_keys: int
) -> None:
    peers = PeerCounts("me", Clock(), max_keys=max_keys)
    truth: dict[tuple[str, str], int] = {}
    for key, node, n in reports:
        peers.apply(f"slots\tmm:{key}\t{node}\t{n}".encode())
        truth[key, node] = n
        for k in KEYS:
            assert peers.open(k) >= sum(v for (tk, _), v in truth.items() if tk == k), k
    assert peers.connections() <= sum(truth.values())


def test_a_node_gone_is_forgotten() -> None:
    peers = PeerCounts("me")
    peers.apply(b"slots\tmm:slots:ip:1\tb\t1")
    peers.apply(b"slots\tmm:slots:ip:1\tc\t2")
    peers.keep_nodes(["me", "b"])  # c's heartbeats stopped
    assert peers.open("slots:ip:1") == 1


def test_what_redis_holds_is_loaded_without_this_node_and_malformed_fields() -> None:
    peers = PeerCounts("me")
    peers.apply(b"slots\tmm:slots:ip:1\tgone\t5")
    fields = {b"b": b"2 1700000000000000", b"me": b"3 1", b"c": b"x 1", b"d": b"", b"e": b"1"}
    peers.load("slots:ip:1", fields)
    assert peers.open("slots:ip:1") == 3  # b's 2 and e's 1; what was heard before is replaced


def test_clear_forgets_everything() -> None:
    peers = PeerCounts("me")
    peers.apply(b"slots\tmm:slots:ip:1\tb\t1")
    peers.apply(b"hit\tmm:rate:x\tb\t1\t60000")
    peers.clear()
    assert peers.open("slots:ip:1") == 0 and peers.events("rate:x", 60) == 0


FIELDS = st.sampled_from(["slots", "hit", "mm:slots:ip:1", "mm:rate:x", "b", "me", "1", "60000"])


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.lists(st.one_of(FIELDS, st.text(max_size=12)), max_size=6).map("\t".join),
        ),
        max_size=20,
    )
)
def test_any_message_is_applied_or_ignored_never_raises(messages: list[bytes | str]) -> None:
    peers = PeerCounts("me")
    for data in messages:
        peers.apply(data)
    assert peers.received <= len(messages)
    assert peers.open("slots:ip:1") >= 0 and 0 <= peers.events("rate:x", 60) <= PEER_EVENTS_MAX
