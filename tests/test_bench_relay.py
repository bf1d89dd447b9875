"""The relay benchmark (bench/relay.py) imports, parses its options and builds its tables
without starting anything; the benchmark itself runs by hand (see README)."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench import __main__ as dispatcher
from bench import relay


def test_quick_is_one_point_once() -> None:
    args = relay.parse_args(["--quick"])
    assert (args.sizes, args.session_counts, args.rcpt_counts) == ([10240], [20], [1])
    assert args.repeats == 1
    assert args.systems == list(relay.SYSTEMS)


def test_full_matrix_and_overrides() -> None:
    args = relay.parse_args(["--systems", "direct,mailmoat", "--repeats", "5"])
    assert args.sizes == [1024, 10240, 102400]
    assert args.session_counts == [1, 20, 100]
    assert args.rcpt_counts == [1, 5]
    assert args.systems == ["direct", "mailmoat"]
    assert args.repeats == 5
    assert relay.parse_args([]).repeats == 3
    with pytest.raises(SystemExit):
        relay.parse_args(["--systems", "sendmail"])


def test_dispatcher_lists_relay() -> None:
    assert "relay" in dispatcher.available()


def test_messages_per_run() -> None:
    assert relay.messages_for(10240, 20, 1000) == 1000
    assert relay.messages_for(102400, 20, 1000) == 333
    assert relay.messages_for(10240, 1, 1000) == 250
    assert relay.messages_for(1024, 100, 100) == 500
    assert relay.messages_for(10240, 20, 1000, "direct") == 1000 * relay.DIRECT_FACTOR


def test_tables_and_targets_from_runs() -> None:
    p = relay.Point(10240, 20, 1)
    runs = [
        relay.Run("direct", p, 0, 1000, seconds=0.25, end_to_end=0.25, cpu=0.1, rss=2**24),
        relay.Run("mailmoat", p, 0, 1000, seconds=1.0, end_to_end=1.0, cpu=0.7, rss=2**25),
        relay.Run("haraka", p, 0, 1000, seconds=3.0, end_to_end=3.0, cpu=2.5, rss=2**27),
        relay.Run("postfix", p, 0, 1000, seconds=1.0, end_to_end=2.0, cpu=1.0, problem="short"),
    ]
    lats = [
        relay.LatencyRun("direct", 10240, 1, 0, [0.0002] * 10),
        relay.LatencyRun("mailmoat", 10240, 1, 0, [0.0010] * 10),
    ]
    s = relay.summarise(runs, lats)
    text = relay.tables(s, [p], ["direct", "mailmoat", "haraka", "postfix"], [10240])
    assert "| 10 KiB x 20 x 1 | 4,000 (4.00x) | 1,000 | 333 (0.33x) | - [1 of 1 invalid] |" in text
    assert "+0.80" in text
    results = {name: ok for name, ok, _ in relay.targets(s)}
    assert results == {
        "10 KiB x 20: mailmoat >= 3x Haraka": True,
        "10 KiB x 20: mailmoat >= 30% of direct": False,
        "10 KiB x 1 session: mailmoat, added p50 < 1 ms": True,
    }


def test_profile_frames() -> None:
    raw = (
        'process 1:"python";run (asyncio/runners.py:1);_pump (mailmoat/server/session.py:1) 30\n'
        'process 1:"python";run (asyncio/runners.py:1) 10\n'
    )
    total, own, incl = relay.top_frames(raw)
    assert total == 40
    assert own[0] == ("_pump (mailmoat/server/session.py:1)", 30)
    assert incl == [("_pump (mailmoat/server/session.py:1)", 30)]


def test_message_has_the_requested_payload() -> None:
    msg = relay.make_message(10240)
    body = msg.split(b"\r\n\r\n", 1)[1]
    assert abs(len(body) - 10240) <= 2
    assert all(len(line) <= 998 for line in body.split(b"\r\n"))


@pytest.mark.parametrize("latency", [True, False])
def test_chart_with_and_without_latency_runs(tmp_path: Path, latency: bool) -> None:
    pytest.importorskip("matplotlib")
    p = relay.Point(10240, 20, 1)
    runs = [relay.Run(x, p, 0, 1000, seconds=1.0, end_to_end=1.0, cpu=0.7) for x in ("mailmoat",)]
    lats = [relay.LatencyRun("mailmoat", 10240, 1, 0, [0.001] * 10)] if latency else []
    out = tmp_path / "relay.png"
    relay.chart(relay.summarise(runs, lats), [p], ["mailmoat"], out)  # --latency-messages 0
    assert out.stat().st_size > 0


def test_store_ops_per_message_by_function() -> None:
    gauges = {"calls.mm_slots": 40, "calls.mm_hit": 20, "calls.mm_get": 0, "round_trips": 30}
    assert relay.store_ops(gauges, 100) == (
        "per message: mm_hit 0.20, mm_slots 0.40; 0.30 round trips (heartbeats included)"
    )
    assert relay.store_ops({}, 100).startswith("per message: no call; 0.00 round trips")
