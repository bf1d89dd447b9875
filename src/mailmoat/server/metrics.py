"""The stats snapshot (`Stats.snapshot`, summed over every process) in the Prometheus text
format, rendered by prometheus_client so the exposition is exactly what Prometheus parses.

Names: a counter ``a.b`` becomes ``mailmoat_a_b_total``; the counter families with a reason
(``refused.<reason>``, ``rejected.<reason>``, ``closed.<reason>``) become one metric each with a
``reason`` label; a gauge ``a.b`` becomes ``mailmoat_a_b``; the process figures are
``mailmoat_resident_memory_bytes``, ``mailmoat_cpu_seconds_total`` and
``mailmoat_uptime_seconds``; a histogram ``a.b`` becomes ``mailmoat_a_b_seconds``. Label
values come from a fixed vocabulary (invariant 3).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mailmoat.limits import LATENCY_BUCKETS as BUCKETS

CONTENT_TYPE = CONTENT_TYPE_LATEST
LABELLED = {
    "refused": "Connections refused at accept time, by reason.",
    "rejected": "Error replies sent, by reason.",
    "closed": "Sessions closed, by reason.",
}


def _name(dotted: str) -> str:
    return "mailmoat_" + re.sub(r"[^a-zA-Z0-9_]", "_", dotted)


class _Snapshot:
    """A one-off collector over one snapshot document."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc

    def collect(self) -> Iterator[Metric]:
        doc = self.doc
        memory = GaugeMetricFamily(
            "mailmoat_resident_memory_bytes", "Resident memory of every mailmoat process."
        )
        memory.add_metric([], float(doc.get("rss_kib", 0)) * 1024)
        yield memory
        cpu = CounterMetricFamily(
            "mailmoat_cpu_seconds", "CPU time used by every mailmoat process."
        )
        cpu.add_metric([], float(doc.get("cpu_seconds", 0)))
        yield cpu
        uptime = GaugeMetricFamily("mailmoat_uptime_seconds", "Seconds since the start.")
        uptime.add_metric([], float(doc.get("uptime", 0)))
        yield uptime
        workers = doc.get("workers")
        if isinstance(workers, list):
            count = GaugeMetricFamily(
                "mailmoat_worker_processes", "Worker processes that answered."
            )
            count.add_metric([], float(sum(1 for w in workers if "error" not in w)))
            yield count
        labelled: dict[str, CounterMetricFamily] = {}
        for name, value in sorted(doc.get("counters", {}).items()):
            family, _, reason = name.partition(".")
            if family in LABELLED and reason:
                if family not in labelled:
                    labelled[family] = CounterMetricFamily(
                        _name(family), LABELLED[family], labels=["reason"]
                    )
                labelled[family].add_metric([reason], float(value))
                continue
            counter = CounterMetricFamily(_name(name), f"Counter {name}.")
            counter.add_metric([], float(value))
            yield counter
        yield from labelled.values()
        for name, value in sorted(doc.get("gauges", {}).items()):
            gauge = GaugeMetricFamily(_name(name), f"Gauge {name}.")
            gauge.add_metric([], float(value))
            yield gauge
        for name, h in sorted(doc.get("histograms", {}).items()):
            family = HistogramMetricFamily(_name(name) + "_seconds", f"Seconds, {name}.")
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], h["counts"], strict=True):
                cumulative += count
                buckets.append((bound, float(cumulative)))
            family.add_metric([], buckets, float(h["sum"]))
            yield family


def render(doc: dict[str, Any]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(doc))
    return generate_latest(registry)
