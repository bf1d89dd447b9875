"""A worker's stats snapshot added into the supervisor's (`mailmoat stats`, /metrics)."""

from __future__ import annotations

from typing import Any

from mailmoat.stats import merge_console, merge_histograms


def add_worker(
    doc: dict[str, Any], pid: int, part: dict[str, Any] | BaseException
) -> dict[str, Any]:
    """Add worker `pid`'s snapshot `part` (or the error that came instead) into `doc`; returns
    its own line (pid, memory, CPU, sessions, loop lag) for the list of workers."""
    if isinstance(part, BaseException):
        return {"pid": pid, "error": str(part)}
    mine = {k: part[k] for k in ("pid", "rss_kib", "cpu_seconds")}
    counters: dict[str, int] = doc["counters"]
    gauges: dict[str, float] = doc["gauges"]
    mine["sessions"] = part["gauges"].get("sessions", 0)
    mine["loop_lag_max_ms"] = part["gauges"].get("loop.lag_max_ms", 0)
    doc["rss_kib"] += part["rss_kib"]
    doc["cpu_seconds"] = round(doc["cpu_seconds"] + part["cpu_seconds"], 3)
    for name, value in part["counters"].items():
        counters[name] = counters.get(name, 0) + value
    merge_histograms(doc["histograms"], part.get("histograms", {}))
    merge_console(doc, part)
    for name, value in part["gauges"].items():
        if name in gauges and name.startswith("loop."):
            gauges[name] = max(gauges[name], value)
        elif name not in ("stress.active",):
            gauges[name] = gauges.get(name, 0) + value
    return mine
