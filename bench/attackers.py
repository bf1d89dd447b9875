"""Attack workers for the harness: each runs one kind of bounded attack on loopback for a fixed
time in its own process (uvloop, its own file-descriptor limit) and prints one JSON line with
what it saw. Run by bench/attack.py as `python -m bench.attackers '<json>'`.

Kinds:
- flood: new connections at a fixed rate; each reads the first reply line and hangs up.
- slowloris: holds N connections, each sending one byte of a never-ending command line every
  few seconds; reconnects when closed.
- junk: N connections sending NOOP after NOOP as fast as the replies come; reconnect when closed.
- errors: N connections sending commands out of sequence (MAIL before HELO) to collect error
  replies; reconnect when closed.
- pregreet: N bots that send EHLO before the greeting; reconnect when closed.
- idle: opens N connections (greeting, EHLO) and holds them silently until the end.
- mailflood: N connections sending valid messages back to back (pressure on the downstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import sys
import time
from collections import Counter
from typing import Any


def addresses(second: int, networks: int, per_network: int) -> list[str]:
    """`networks` /24s from 127.<second>.0.0 upward with `per_network` addresses in each."""
    out = []
    for n in range(networks):
        b, c = second + n // 256, n % 256
        out += [f"127.{b}.{c}.{d}" for d in range(1, per_network + 1)]
    return out


class Worker:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.port: int = spec["port"]
        self.sources: list[str] = addresses(*spec["sources"])
        self.counts: Counter[str] = Counter()
        self.open = 0
        self.samples: list[int] = []
        self.end = 0.0
        self.rng = random.Random(spec.get("seed", 1))
        self.connecting = asyncio.Semaphore(spec.get("connect_concurrency", 500))
        self.first_full: float | None = None

    async def connect(
        self, i: int, timeout: float = 10.0
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with self.connecting:
            self.counts["attempts"] += 1
            try:
                return await asyncio.wait_for(
                    asyncio.open_connection(
                        "127.0.0.1", self.port, local_addr=(self.sources[i % len(self.sources)], 0)
                    ),
                    timeout,
                )
            except (OSError, TimeoutError) as err:
                self.counts[f"connect_error.{type(err).__name__}"] += 1
                return None

    async def first_line(self, reader: asyncio.StreamReader, timeout: float) -> bytes:
        try:
            return await asyncio.wait_for(reader.readline(), timeout)
        except (OSError, TimeoutError, ValueError):
            return b""

    def classify(self, line: bytes) -> str:
        code = line[:3].decode("ascii", "replace") if line else "none"
        self.counts[f"first_reply.{code}"] += 1
        return code

    def left(self) -> float:
        return self.end - asyncio.get_running_loop().time()

    async def run(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        self.end = loop.time() + self.spec["duration"]
        kind = self.spec["kind"]
        started = loop.time()
        main: asyncio.Future[Any]
        if kind == "flood":
            main = asyncio.ensure_future(self.flood())
        else:
            n = self.spec["connections"]
            main = asyncio.ensure_future(
                asyncio.gather(*(getattr(self, kind)(i) for i in range(n)))
            )
        sampler = asyncio.ensure_future(self.sample())
        stop = asyncio.Event()  # SIGTERM ends the attack early, with a report
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        stopped = asyncio.ensure_future(stop.wait())
        # with a count (bench/conn_cost.py) the attack ends when its connections are done
        when = asyncio.FIRST_COMPLETED if self.spec.get("count") else asyncio.ALL_COMPLETED
        await asyncio.wait({main, stopped}, timeout=max(self.left(), 0.1), return_when=when)
        self.end = loop.time()
        stopped.cancel()
        main.cancel()
        sampler.cancel()
        with contextlib.suppress(BaseException):
            await main
        held = self.samples or [0]
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu": round(usage.ru_utime + usage.ru_stime, 2),
            "kind": kind,
            "seconds": round(loop.time() - started, 2),
            "counts": dict(self.counts),
            "held_max": max(held),
            "held_avg": round(sum(held) / len(held), 1),
            "held_last": held[-1],
            "time_to_full": self.first_full,
        }

    async def sample(self) -> None:
        target = self.spec.get("connections")
        t0 = asyncio.get_running_loop().time()
        while True:
            await asyncio.sleep(0.25)
            self.samples.append(self.open)
            if target and self.first_full is None and self.open >= target:
                self.first_full = round(asyncio.get_running_loop().time() - t0, 2)

    # ------------------------------------------------------------------ kinds
    async def flood(self) -> None:
        rate = self.spec["rate"]
        count = self.spec.get("count")  # a fixed number of connections, then stop
        tasks: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()
        i = 0
        next_at = loop.time()
        while self.left() > 0 and (count is None or i < count):
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            next_at += 0.01
            for _ in range(max(1, int(rate * 0.01))):
                if count is not None and i >= count:
                    break
                if len(tasks) >= self.spec.get("max_in_flight", 2000):
                    self.counts["skipped_in_flight"] += 1
                    continue
                t = asyncio.ensure_future(self._flood_one(i))
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                i += 1
        if count is not None and tasks:  # the last ones finish (bounded by their timeouts)
            await asyncio.wait(set(tasks), timeout=max(self.left(), 0.1))
        for t in list(tasks):
            t.cancel()

    async def _flood_one(self, i: int) -> None:
        conn = await self.connect(i, timeout=5)
        if conn is None:
            return
        reader, writer = conn
        self.classify(await self.first_line(reader, 5))
        writer.close()

    async def _session(self, i: int, body: Any, delay_after: float = 0.5) -> None:
        """Connect, run `body(reader, writer)` while connected; reconnect until the end."""
        while self.left() > 0:
            conn = await self.connect(i)
            if conn is None:
                await asyncio.sleep(delay_after)
                continue
            reader, writer = conn
            self.open += 1
            try:
                await body(reader, writer)
            except (OSError, TimeoutError, ConnectionError, ValueError):
                self.counts["reset"] += 1
            finally:
                self.open -= 1
                writer.close()
            await asyncio.sleep(delay_after * (0.5 + self.rng.random()))

    async def slowloris(self, i: int) -> None:
        interval = self.spec.get("interval", 3.0)
        junk = b"EHLO slowloris.example.org-"

        async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.classify(await self.first_line(reader, 15)) != "220":
                return
            k = 0
            while self.left() > 0:
                try:
                    got = await asyncio.wait_for(
                        reader.read(512), interval * (0.7 + 0.6 * self.rng.random())
                    )
                except TimeoutError:
                    writer.write(junk[k % len(junk) : k % len(junk) + 1])
                    self.counts["bytes_trickled"] += 1
                    k += 1
                    continue
                if not got or b"421" in got:
                    self.counts["closed_by_server"] += 1
                    return

        await self._session(i, body, delay_after=self.spec.get("reconnect", 1.0))

    async def junk(self, i: int) -> None:
        async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.classify(await self.first_line(reader, 15)) != "220":
                return
            while self.left() > 0:
                writer.write(b"NOOP\r\n")
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line or line.startswith(b"421"):
                    self.counts["closed_by_server"] += 1
                    return
                self.counts["junk_replies"] += 1

        await self._session(i, body, delay_after=self.spec.get("reconnect", 0.5))

    async def errors(self, i: int) -> None:
        async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.classify(await self.first_line(reader, 15)) != "220":
                return
            while self.left() > 0:
                writer.write(b"MAIL FROM:<bot@spam.example>\r\n")
                line = await asyncio.wait_for(reader.readline(), 30)
                if not line or line.startswith(b"421"):
                    self.counts["closed_by_server"] += 1
                    return
                self.counts["error_replies"] += 1

        await self._session(i, body, delay_after=self.spec.get("reconnect", 0.5))

    async def pregreet(self, i: int) -> None:
        async def body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"EHLO bot.example\r\n")
            self.classify(await self.first_line(reader, 15))
            await asyncio.wait_for(reader.read(1024), 15)

        await self._session(i, body, delay_after=self.spec.get("reconnect", 0.5))

    async def mailflood(self, i: int) -> None:
        body = b"Subject: bulk\r\n\r\n" + b"bulk mail line, perfectly valid\r\n" * 30 + b".\r\n"

        async def reply(reader: asyncio.StreamReader) -> bytes:
            while (line := await asyncio.wait_for(reader.readline(), 30))[3:4] == b"-":
                pass
            return line

        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if self.classify(await self.first_line(reader, 15)) != "220":
                return
            writer.write(b"EHLO bulk.example\r\n")
            await reply(reader)
            while self.left() > 0:
                for line, code in (
                    (b"MAIL FROM:<bulk@bulk.example>\r\n", b"250"),
                    (b"RCPT TO:<alice@example.test>\r\n", b"250"),
                    (b"DATA\r\n", b"354"),
                    (body, b"250"),
                ):
                    writer.write(line)
                    got = await reply(reader)
                    if not got.startswith(code):
                        self.counts[f"reply.{got[:3].decode('ascii', 'replace')}"] += 1
                        if not got or got.startswith(b"421"):
                            self.counts["closed_by_server"] += 1
                            return
                        writer.write(b"RSET\r\n")
                        await reply(reader)
                        break
                else:
                    self.counts["messages"] += 1

        await self._session(i, run, delay_after=self.spec.get("reconnect", 0.5))

    async def idle(self, i: int) -> None:
        conn = await self.connect(i, timeout=30)
        if conn is None:
            return
        reader, writer = conn
        try:
            if self.classify(await self.first_line(reader, 30)) != "220":
                return
            writer.write(b"EHLO idle.example\r\n")
            while (line := await asyncio.wait_for(reader.readline(), 30))[3:4] == b"-":
                pass
            if not line.startswith(b"250"):
                return
            self.open += 1
            try:
                got = await asyncio.wait_for(reader.read(512), max(self.left(), 0.1))
                if not got:
                    self.counts["closed_by_server"] += 1
            except TimeoutError:
                pass
            finally:
                self.open -= 1
        except (OSError, TimeoutError, ConnectionError, ValueError):
            self.counts["reset"] += 1
        finally:
            writer.close()


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def main() -> None:
    spec = json.loads(sys.argv[1])
    raise_nofile()
    if spec.get("nice"):
        os.nice(spec["nice"])
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    started = time.monotonic()
    result = runner(Worker(spec).run())
    result["wall"] = round(time.monotonic() - started, 2)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
