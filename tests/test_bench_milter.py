"""A quick run of the milter protocol benchmark's code (a few messages against this tree's
milter), so that a change to the milter or the test helpers it uses does not break it
unnoticed. Its figures are not looked at: that is the benchmark's job."""

from __future__ import annotations

from bench import milter_protocol


def test_the_protocol_benchmark_runs_messages_through_a_milter() -> None:
    # 200 messages: some 0.1 s of CPU, ten of the kernel's 10 ms ticks (fewer might read 0)
    cpu = milter_protocol.measure(milter_protocol.SRC, 200)
    assert cpu > 0
