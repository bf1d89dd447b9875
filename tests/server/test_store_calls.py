"""The supervisor counts the store calls its workers make over their links
(`store.worker_calls` in /stats): each is a round trip on a worker's hot path."""

from __future__ import annotations

import inspect
from pathlib import Path

from tests.server.test_handover import supervisor_with


async def test_each_store_call_from_a_worker_is_counted(tmp_path: Path) -> None:
    supervisor, (worker,) = supervisor_with(tmp_path, 1)
    try:
        assert supervisor.stats.get("store.worker_calls") == 0
        answer = supervisor._serve(worker.process, "store", ("set", "k", "v", 60.0))
        if inspect.isawaitable(answer):
            await answer
        answer = supervisor._serve(worker.process, "store", ("get", "k"))
        assert (await answer if inspect.isawaitable(answer) else answer) == "v"
        assert supervisor.stats.get("store.worker_calls") == 2
    finally:
        worker.close()
