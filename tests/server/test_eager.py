"""Running a coroutine at once, as far as it goes without waiting (server/eager.py)."""

from __future__ import annotations

import asyncio

import pytest

from mailmoat.server import eager


async def test_a_coroutine_that_never_waits_gives_its_result_at_once() -> None:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done.set_result(41)

    async def quick() -> int:
        return await done + 1  # an await that does not suspend (as the memory store's)

    before = len(asyncio.all_tasks())
    assert eager.start(quick()) == 42
    assert len(asyncio.all_tasks()) == before


async def test_its_exception_comes_out_of_start() -> None:
    async def broken() -> int:
        raise KeyError("store")

    with pytest.raises(KeyError):
        eager.start(broken())


async def test_one_that_waits_finishes_in_a_task() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    steps: list[str] = []

    async def slow() -> int:
        steps.append("before")
        value = await gate
        steps.append("after")
        await asyncio.sleep(0)  # and a bare yield too
        return value + 1

    rest = eager.start(slow())
    assert isinstance(rest, eager.Rest) and steps == ["before"]
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    gate.set_result(1)
    assert await task == 2
    assert steps == ["before", "after"]


async def test_cancelling_the_task_reaches_the_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []

    async def slow() -> int:
        try:
            return await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = eager.start(slow())
    assert isinstance(rest, eager.Rest)
    task = asyncio.ensure_future(_await(rest))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"] and gate.cancelled()


async def _await(rest: eager.Rest[int]) -> int:
    return await rest
