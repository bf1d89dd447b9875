"""Message.omit: byte ranges of the spooled content left out on delivery (forged header fields),
whatever the chunk boundaries; everything else byte for byte, and the size to match."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from mailmoat.message import Envelope, Message, Spool, SpoolBudget, in_thread


class SmallChunks(Spool):
    def __init__(self, size: int) -> None:
        super().__init__(16)
        self.chunk_size = size

    def chunks(self, size: int = 0):  # type: ignore[override]
        return super().chunks(self.chunk_size)


def test_omitted_ranges_are_cut_across_any_chunk_boundaries() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 60)))
        spool = SmallChunks(rng.randrange(1, 9))
        spool.write(data)
        points = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randrange(7))))
        ranges = [(points[i], points[i + 1]) for i in range(0, len(points) - 1, 2)]
        message = Message(Envelope(""), spool, "Q", b"Trace: x\r\n", ranges)
        expected, last = bytearray(b"Trace: x\r\n"), 0
        for start, end in ranges:
            expected += data[last:start]
            last = end
        expected += data[last:]
        got = b"".join(message.chunks())
        assert got == bytes(expected), (data, ranges)
        assert message.size == len(got)


def test_no_ranges_is_the_spool_as_it_is() -> None:
    spool = Spool()
    spool.write(b"Subject: x\r\n\r\nbody\r\n")
    message = Message(Envelope(""), spool, "Q")
    assert b"".join(message.chunks()) == b"Subject: x\r\n\r\nbody\r\n"
    assert message.size == spool.size


def test_spool_rolls_over_into_a_file_past_its_memory_limit() -> None:
    rng = random.Random(7)
    for limit in (1, 100, 1000):
        spool = Spool(limit)
        data = b""
        while len(data) < 3000:
            piece = rng.randbytes(rng.randrange(0, 300))
            spool.write(piece)
            data += piece
            assert spool.size == len(data)
            assert spool.in_memory == (len(data) <= limit)
            for size in (7, 4096):
                parts = list(spool.chunks(size))
                assert b"".join(parts) == data and all(0 < len(p) <= size for p in parts)
        assert spool.getvalue() == data
        spool.close()


def test_a_closed_spool_never_reads_as_empty() -> None:
    """Delivery reads the spool; once freed, its content must not pass for an empty message."""
    for limit in (1 << 20, 4):  # in memory; rolled over into a temporary file
        spool = Spool(limit)
        spool.write(b"Subject: x\r\n\r\nbody\r\n")
        reader = spool.chunks()  # a delivery thread got its iterator, then the spool was freed
        spool.close()
        with pytest.raises(ValueError, match="closed"):
            list(reader)
        with pytest.raises(ValueError, match="closed"):
            list(Message(Envelope("a@b.test"), spool, "Q").chunks())


async def test_a_cancelled_caller_of_in_thread_waits_for_the_thread() -> None:
    """The thread reads the spool: the caller's `finally` (which frees it) runs only after."""
    release = threading.Event()
    events: list[str] = []

    def read() -> None:
        release.wait(10)
        events.append("thread done")

    async def caller() -> None:
        try:
            await in_thread(read)
        finally:
            events.append("spool freed")

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0)  # the thread is running
    task.cancel()
    for _ in range(20):  # the cancellation does not end the task while the thread runs
        await asyncio.sleep(0.005)
        assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert events == ["thread done", "spool freed"]


def test_spools_share_a_budget_and_spill_to_disk_past_it() -> None:
    budget = SpoolBudget(100)
    a, b = Spool(1000, budget), Spool(1000, budget)
    a.write(b"a" * 60)
    b.write(b"b" * 30)
    assert a.in_memory and b.in_memory and budget.used == 90
    b.write(b"b" * 30)  # its own limit is far, the shared budget is not: to disk
    assert not b.in_memory and budget.used == 60
    b.write(b"c" * 10)
    assert b.getvalue() == b"b" * 60 + b"c" * 10 and a.getvalue() == b"a" * 60
    a.close()
    b.close()
    assert budget.used == 0
    c = Spool(1000, budget)
    c.write(b"x" * 100)  # the room is back
    assert c.in_memory and budget.used == 100
    del c  # dropped without close(): its bytes go back all the same
    assert budget.used == 0
