"""The legitimate side of the attack harness: the sender whose mail must get through, and the
DNS that vouches for it. (The "internal server" behind mailmoat is tests/support's
FakeDownstream, counting only.)

The sender is a small asyncio program written for measuring, not general SMTP software: it
paces its messages, reuses a connection for a few of them (as an MTA does) and times each one.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


class LegitDns:
    """A private dnsmasq on 127.0.0.1 for mailmoat's DNS checks: each legitimate address has
    a name that resolves both ways (FCrDNS and HELO pass), legit.test publishes SPF for them
    and DMARC p=none; every other name and address is NXDOMAIN, as for most bots. No upstream."""

    def __init__(self, workdir: Path, names: dict[str, str]) -> None:
        self.dir = workdir / "dns"
        self.names = names  # address -> name
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> int:
        from tests.support.ports import free_port

        from bench.relay import BenchError, dns_answers, ensure_dnsmasq, stop_process

        binary = ensure_dnsmasq()
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "dnsmasq.log"
        for _ in range(5):
            self.port = free_port()
            conf = self.dir / "dnsmasq.conf"
            lines = [
                f"port={self.port}",
                "listen-address=127.0.0.1",
                "bind-interfaces",
                "no-resolv",
                "no-hosts",
                "no-poll",
                "log-facility=-",
                "local-ttl=3600",
                "local=/test/",
                "local=/in-addr.arpa/",
                "local=/example/",
                *(f"host-record={name},{ip}" for ip, name in self.names.items()),
                'txt-record=legit.test,"v=spf1 ip4:127.0.0.0/29 -all"',
                'txt-record=_dmarc.legit.test,"v=DMARC1; p=none"',
            ]
            conf.write_text("\n".join(lines) + "\n")
            argv = [binary, "--keep-in-foreground", f"--conf-file={conf}", "--pid-file="]
            with open(log, "ab") as out:
                self.proc = subprocess.Popen(
                    argv, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True
                )
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if dns_answers(self.port):
                    return self.port
                time.sleep(0.05)
            stop_process(self.proc)
        raise BenchError(f"dnsmasq did not start, see {log}")

    def stop(self) -> None:
        from bench.relay import stop_process

        if self.proc is not None:
            stop_process(self.proc)


@dataclass
class LegitResult:
    attempted: int = 0
    delivered: int = 0
    latencies: list[float] = field(default_factory=list)
    started: list[float] = field(default_factory=list)
    """When each timed message began, in seconds from the start of the run."""
    errors: list[str] = field(default_factory=list)
    phases: dict[int, dict[str, float]] = field(default_factory=dict)
    """For each message that opened a connection (by its index in `latencies`): seconds spent
    on the previous connection's QUIT, the connect, the 220, the EHLO and each reply of the
    transaction (MAIL, RCPT, DATA, end of data)."""

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


MESSAGE = (
    b"From: Legit Sender <sender@legit.test>\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: a legitimate message\r\n"
    b"\r\n" + b"This is a line of an ordinary message body, nothing to see here.\r\n" * 15
)


async def _reply(reader: asyncio.StreamReader) -> int:
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("server closed the connection")
        if line[3:4] != b"-":
            return int(line[:3])


async def _expect(reader: asyncio.StreamReader, code: int, what: str) -> None:
    got = await _reply(reader)
    if got != code:
        raise RuntimeError(f"{what}: {got}")


class Legit:
    """Sends `rate` messages per second to mailmoat from `source`, `per_connection` messages
    over each connection; every message is timed from its first command (from the connect for
    the first one on a connection) to the 250 after its data."""

    def __init__(
        self, port: int, source: str, rate: float = 10.0, per_connection: int = 20
    ) -> None:
        self.port = port
        self.source = source
        self.interval = 1.0 / rate
        self.per_connection = per_connection

    async def run(self, duration: float, step_timeout: float = 30.0) -> LegitResult:
        result = LegitResult()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + duration
        next_at = loop.time()
        writer: asyncio.StreamWriter | None = None
        reader: asyncio.StreamReader | None = None
        sent_here = 0
        while loop.time() < end:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            next_at += self.interval
            result.attempted += 1
            started = time.perf_counter()
            marks: dict[str, float] = {}
            try:
                if writer is None or sent_here >= self.per_connection:
                    if writer is not None:
                        await _quit(reader, writer)
                    marks["quit"] = time.perf_counter()
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(
                            "127.0.0.1", self.port, local_addr=(self.source, 0)
                        ),
                        step_timeout,
                    )
                    marks["connect"] = time.perf_counter()
                    sent_here = 0
                    assert reader is not None and writer is not None
                    await asyncio.wait_for(_expect(reader, 220, "greeting"), step_timeout)
                    marks["220"] = time.perf_counter()
                    writer.write(b"EHLO legit.test\r\n")
                    await asyncio.wait_for(_expect(reader, 250, "EHLO"), step_timeout)
                    marks["ehlo"] = time.perf_counter()
                assert reader is not None and writer is not None
                await asyncio.wait_for(
                    _send_one(reader, writer, marks if marks else None), step_timeout
                )
                sent_here += 1
                result.delivered += 1
                done = time.perf_counter()
                if marks:
                    last, spans = started, {}
                    for name, at in marks.items():
                        spans[name], last = at - last, at
                    result.phases[len(result.latencies)] = spans
                result.latencies.append(done - started)
                result.started.append(round(next_at - self.interval - t0, 2))
            except (OSError, RuntimeError, TimeoutError, ConnectionError) as err:
                result.errors.append(f"{type(err).__name__}: {err}")
                if writer is not None:
                    writer.close()
                writer = None
        if writer is not None:
            await _quit(reader, writer)
        return result

    async def connect_latency(self, samples: int, timeout: float = 10.0) -> list[float]:
        """Seconds from connect() to the 220 greeting, `samples` times in a row."""
        out = []
        for _ in range(samples):
            started = time.perf_counter()
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.source, 0)),
                timeout,
            )
            await asyncio.wait_for(_expect(reader, 220, "greeting"), timeout)
            out.append(time.perf_counter() - started)
            writer.write(b"QUIT\r\n")
            writer.close()
            await asyncio.sleep(0.05)
        return out


async def _send_one(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    marks: dict[str, float] | None = None,
) -> None:
    """One transaction; with `marks`, when each reply came (keyed by command)."""
    for command, code, what in (
        (b"MAIL FROM:<sender@legit.test>\r\n", 250, "MAIL"),
        (b"RCPT TO:<alice@example.test>\r\n", 250, "RCPT"),
        (b"DATA\r\n", 354, "DATA"),
        (MESSAGE + b".\r\n", 250, "end of data"),
    ):
        writer.write(command)
        await _expect(reader, code, what)
        if marks is not None:
            marks[what] = time.perf_counter()


async def _quit(reader: asyncio.StreamReader | None, writer: asyncio.StreamWriter) -> None:
    try:
        writer.write(b"QUIT\r\n")
        if reader is not None:
            await asyncio.wait_for(reader.read(100), 2)
    except (OSError, TimeoutError, ConnectionError):
        pass
    finally:
        writer.close()


async def probe_connections(
    port: int, sources: list[str], rate: float, duration: float, timeout: float = 10.0
) -> tuple[list[float], int]:
    """New connections at `rate` per second (rotating over `sources`): seconds from connect()
    to the 220 greeting for each, and how many got no greeting."""
    loop = asyncio.get_running_loop()
    end = loop.time() + duration
    latencies: list[float] = []
    failed = 0
    i = 0

    async def one(source: str) -> None:
        nonlocal failed
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0)), timeout
            )
            try:
                await asyncio.wait_for(_expect(reader, 220, "greeting"), timeout)
                latencies.append(time.perf_counter() - started)
                name = f"probe{source.rsplit('.', 1)[1]}.legit.test"
                writer.write(b"EHLO %s\r\n" % name.encode())  # as any MTA would
                await asyncio.wait_for(_expect(reader, 250, "EHLO"), timeout)
                writer.write(b"QUIT\r\n")
            finally:
                writer.close()
        except (OSError, RuntimeError, TimeoutError, ConnectionError):
            failed += 1

    tasks = []
    while loop.time() < end:
        tasks.append(asyncio.ensure_future(one(sources[i % len(sources)])))
        i += 1
        await asyncio.sleep(1 / rate)
    await asyncio.gather(*tasks)
    return latencies, failed
