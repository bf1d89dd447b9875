"""This node's own open-connection counts kept to send again (`store.own_counts`): a zero
forgets a key, and a refresh takes only counts not sent lately, the oldest first, bounded."""

from __future__ import annotations

from mailmoat.limits import SLOTS_REFRESH
from mailmoat.store.own_counts import OwnCounts
from tests.support.clock import Clock


def test_counts_are_due_once_not_sent_for_slots_refresh_oldest_first_bounded() -> None:
    clock = Clock()
    own = OwnCounts(clock)
    for i in range(5):
        own.sent(f"slots:ip:{i}", i + 1)
        clock.now += 1
    own.sent("slots:ip:0", 0)  # its connections ended: nothing to send again
    assert own.due(10) == []  # all sent lately
    clock.now += SLOTS_REFRESH - 3  # 1 and 2 were sent SLOTS_REFRESH ago, 3 and 4 later
    assert own.due(10) == [("slots:ip:1", 2), ("slots:ip:2", 3)]
    assert own.due(1) == [("slots:ip:1", 2)]  # at most the limit
    own.sent("slots:ip:1", 2)  # sent again: its turn comes last
    clock.now += 10 * SLOTS_REFRESH
    assert [k for k, _ in own.due(10)] == ["slots:ip:2", "slots:ip:3", "slots:ip:4", "slots:ip:1"]
    assert own.all() == [("slots:ip:2", 3), ("slots:ip:3", 4), ("slots:ip:4", 5), ("slots:ip:1", 2)]


def test_a_count_that_could_not_be_queued_stays_due() -> None:
    clock = Clock()
    own = OwnCounts(clock)
    own.sent("slots:ip:1", 1)
    clock.now += SLOTS_REFRESH
    own.unsent("slots:ip:1", 3)  # the latest count, not queued: still due, at its old turn
    own.unsent("slots:ip:2", 1)  # new: due (sent never), behind the keys sent before it
    assert own.due(10) == [("slots:ip:1", 3), ("slots:ip:2", 1)]
    own.unsent("slots:ip:2", 0)
    assert len(own) == 1
