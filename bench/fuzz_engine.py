"""Fuzz the sans-IO SMTP engine (mailmoat.smtp.connection.ServerConnection).

    python bench/fuzz_engine.py --seconds 600 --seed 1            # atheris when installed
    python bench/fuzz_engine.py --seconds 600 --engine builtin    # no atheris needed

One fuzz input is a byte string: byte 0 chooses the settings (see `OPTION_BITS`), byte 1 seeds
how the rest is cut into TCP-sized chunks and how the "application" answers each command (its
lowest bit also makes every accept probe the documented misuse first), and the rest is what
the client sends. `run_one(data)` drives a whole session through `Harness`,
which checks the engine's invariants after every step and raises `InvariantError` (or lets the
engine's own exception through) when one breaks.

Engines:
- atheris (coverage-guided libFuzzer), when `import atheris` works;
- builtin: coverage-agnostic. It starts from a seed corpus of real sessions and applies
  byte-level mutations (insert CR/LF/NUL/dots/CRLF.CRLF/long runs/SMTP tokens, splice two
  inputs, duplicate/delete ranges, flip the option and chunking bytes). `fuzz()` is the core;
  tests/smtp/test_fuzz_brief.py runs it for a few seconds in CI.

On a failure the input is minimised and printed as a Python literal, ready for
`run_one(<literal>)`, and the process exits with status 1.
"""

from __future__ import annotations

import argparse
import functools
import random
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, Phase, ServerConnection
from mailmoat.smtp.events import (
    Command,
    DataChunk,
    DataStart,
    Event,
    Helo,
    MailFrom,
    MessageAborted,
    MessageEnd,
    Quit,
    RcptTo,
    Rejected,
    Rset,
    StartTls,
)
from mailmoat.smtp.replies import MAX_REPLY_LINE, Reply, reply


class InvariantError(AssertionError):
    """The engine broke one of its documented invariants."""


_REPLY_LINE = re.compile(rb"([2-5]\d\d)([ -])[\x20-\x7e]*\r\n")
_SENTINELS = (NEED_DATA, PAUSED, CLOSED)

# How the simulated application answers a command. "accept" is the engine's standard reply;
# "misuse" first tries a documented misuse (accept twice; a wrong positive code for DATA or
# STARTTLS), checks the engine raised and kept its state, then accepts.
ANSWERS = ("accept", "reject5", "reject4", "close421", "close", "misuse")
_R5 = reply(550, "5.7.1", "Policy says no")
_R4 = reply(451, "4.3.0", "Try again later")
_R421 = reply(421, "4.3.2", "Shutting down")
_RCLOSE = reply(554, "5.7.1", "Go away")


def _check(cond: object, message: str) -> None:
    if not cond:
        raise InvariantError(message)


def check_content(data: bytes) -> None:
    """Message content: every line ends in CRLF, no bare CR or LF anywhere."""
    _check(data.endswith(b"\r\n"), f"DataChunk does not end in CRLF: {data[-20:]!r}")
    _check(
        data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"),
        f"DataChunk holds a bare CR or LF: {data[:80]!r}",
    )


@dataclass
class Harness:
    """Drive one `ServerConnection` like a transport and an application would, checking the
    engine's invariants after every feed.

    `answers` is cycled through, one entry per Command event (see `ANSWERS`). An accepted
    STARTTLS is followed at once by `tls_started()` (the handshake "succeeds" immediately).
    With `probe_misuse`, every "accept" is a "misuse" (see `ANSWERS`).
    """

    settings: SmtpSettings
    answers: Sequence[str] = ("accept",)
    tls_available: bool = False
    tls_active: bool = False
    pregreet: bytes = b""
    probe_misuse: bool = False
    hostname: str = "mx.test"
    conn: ServerConnection = field(init=False)
    events: list[Event] = field(default_factory=list, init=False)
    output: bytearray = field(default_factory=bytearray, init=False)
    closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.conn = ServerConnection(
            engine_limits(self.settings),
            self.hostname,
            tls_available=self.tls_available,
            tls_active=self.tls_active,
        )
        self._answer_i = 0
        self._replies_expected = 1  # the greeting, or the pregreet refusal in its place
        self._replies_seen = 0
        self._reply_code: bytes | None = None  # code of an unfinished multi-line reply
        # model of the transaction, from what the application accepted
        self._mail = False
        self._rcpts = 0
        self._in_data = False
        self._msg_bytes = 0
        if self.pregreet:
            self.conn.receive_data(self.pregreet)
        self.conn.greeting()
        self._collect()
        self.drain()

    # ------------------------------------------------------------------ driving
    def feed(self, data: bytes) -> None:
        """Feed one chunk (b"" is end of input), drain, check the invariants."""
        if self.closed:
            self.conn.receive_data(data)
            _check(self.conn.next_event() is CLOSED, "a closed engine produced an event")
            _check(not self.conn.data_to_send(), "a closed engine produced output")
            return
        self.conn.receive_data(data)
        self.drain(last_chunk=len(data))

    def feed_all(self, chunks: Iterable[bytes]) -> None:
        for chunk in chunks:
            self.feed(chunk)

    def drain(self, last_chunk: int = 0) -> None:
        conn = self.conn
        while True:
            ev = conn.next_event()
            if ev in _SENTINELS:
                break
            assert isinstance(ev, Event)
            self.events.append(ev)
            self._check_event(ev)
            if isinstance(ev, Command):
                self._answer(ev)
        self._collect()
        if ev is CLOSED:
            self.closed = True
        else:
            # The harness answers every command at once and finishes every handshake, so the
            # engine can only be waiting for input.
            _check(ev is NEED_DATA, f"engine stopped at {ev} with nothing pending")
            _check(conn.phase in (Phase.COMMAND, Phase.DATA), f"phase {conn.phase}")
        bound = max(self.settings.max_command_line, self.settings.max_text_line) + last_chunk
        _check(conn.buffered <= bound, f"input buffer {conn.buffered} > {bound}")
        _check(
            self._replies_seen == self._replies_expected,
            f"{self._replies_seen} replies written for {self._replies_expected} answers",
        )
        _check(self._reply_code is None, "a multi-line reply was left unfinished")

    # --------------------------------------------------------------- checking
    def _collect(self) -> None:
        out = self.conn.data_to_send()
        if self.closed:
            _check(not out, "output after CLOSED")
        self.output += out
        pos = 0
        while pos < len(out):
            m = _REPLY_LINE.match(out, pos)
            _check(m is not None, f"malformed reply line: {out[pos : pos + 80]!r}")
            assert m is not None
            _check(m.end() - pos <= MAX_REPLY_LINE, f"reply line of {m.end() - pos} octets")
            code, sep = m.group(1), m.group(2)
            _check(self._reply_code in (None, code), "reply code changed inside a multi-line reply")
            self._reply_code = code if sep == b"-" else None
            if sep == b" ":
                self._replies_seen += 1
            pos = m.end()

    def _check_event(self, ev: Event) -> None:
        limits = self.settings
        if isinstance(ev, DataChunk):
            _check(self._in_data, "DataChunk outside DATA")
            _check(ev.data, "empty DataChunk")
            check_content(ev.data)
            self._msg_bytes += len(ev.data)
            _check(
                self._msg_bytes <= limits.max_message_size,
                f"{self._msg_bytes} content bytes > max_message_size",
            )
        elif isinstance(ev, MessageEnd):
            _check(self._in_data, "MessageEnd without an accepted DATA")
            _check(self._mail and self._rcpts >= 1, "MessageEnd without MAIL and a RCPT")
            _check(ev.size == self._msg_bytes, f"MessageEnd.size {ev.size} != {self._msg_bytes}")
            self._in_data = False
        elif isinstance(ev, MessageAborted):
            self._in_data = False
            self._mail = False
            self._rcpts = 0
        elif isinstance(ev, Rejected):
            _check(ev.reply.code >= 400, f"Rejected with a positive reply: {ev.reply}")
            if ev.reason != "pregreet":
                self._replies_expected += 1
        elif isinstance(ev, RcptTo):
            _check(self._mail, "RcptTo event without an accepted MAIL")
            _check(self._rcpts < limits.max_recipients, "RcptTo beyond max_recipients")
        elif isinstance(ev, DataStart):
            _check(self._mail and self._rcpts >= 1, "DataStart without MAIL and a RCPT")
        elif isinstance(ev, MailFrom):
            _check(not self._mail, "MailFrom event inside a transaction")
            if ev.size is not None:
                _check(ev.size <= limits.max_message_size, "MAIL SIZE above the limit passed")
        if isinstance(ev, Command) and not isinstance(ev, MessageEnd):
            _check(not self._in_data, f"{type(ev).__name__} during DATA")

    def _answer(self, ev: Command) -> None:
        conn = self.conn
        kind = self.answers[self._answer_i % len(self.answers)] if self.answers else "accept"
        self._answer_i += 1
        self._replies_expected += 1
        if kind == "accept" and self.probe_misuse:
            kind = "misuse"
        if kind == "misuse":
            self._collect()  # so that anything written by the misuse shows
            if isinstance(ev, DataStart | StartTls):
                try:
                    conn.send(reply(250, "2.0.0", "Ok"))
                except ValueError:
                    pass
                else:
                    raise InvariantError(f"{type(ev).__name__} accepted with 250")
                _check(conn.next_event() is PAUSED, "a refused misuse lost the pending command")
                _check(not conn.data_to_send(), "a refused misuse wrote output")
            conn.accept()
            try:
                conn.accept()
            except RuntimeError:
                pass
            else:
                raise InvariantError("accept() twice did not raise")
            answer: Reply | None = None
        elif kind == "accept":
            conn.accept()
            answer = None
        else:
            answer = {"reject5": _R5, "reject4": _R4, "close421": _R421, "close": _RCLOSE}[kind]
            conn.send(answer, close=kind == "close")
        positive = answer is None or answer.positive
        if isinstance(ev, MessageEnd):
            self._mail = False
            self._rcpts = 0
            self._msg_bytes = 0
        elif not positive:
            pass
        elif isinstance(ev, Helo | Rset):
            self._mail = False
            self._rcpts = 0
        elif isinstance(ev, MailFrom):
            self._mail = True
            self._rcpts = 0
        elif isinstance(ev, RcptTo):
            self._rcpts += 1
        elif isinstance(ev, DataStart):
            self._in_data = True
            self._msg_bytes = 0
        elif isinstance(ev, StartTls):
            self._mail = False
            self._rcpts = 0
            if not conn.closing:
                _check(conn.next_event() is PAUSED, "engine not paused for the TLS handshake")
                conn.tls_started()
        if isinstance(ev, Quit) or (answer is not None and (answer.code == 421 or kind == "close")):
            _check(conn.closing, f"{kind} answer to {type(ev).__name__} did not close")


# ---------------------------------------------------------------------- fuzz input
OPTION_BITS = {
    0x01: "bare_line_endings=normalise",
    0x02: "pipelining off",
    0x04: "tls_available",
    0x08: "smtputf8 off",
    0x10: "small limits",
    0x20: "first chunk arrives before the greeting",
    0x40: "end of input at the end",
    0x80: "varied answers (else accept all)",
}


@functools.lru_cache(maxsize=64)
def settings_for(options: int) -> SmtpSettings:
    small = bool(options & 0x10)
    return SmtpSettings(
        bare_line_endings="normalise" if options & 0x01 else "reject",
        pipelining=not options & 0x02,
        smtputf8=not options & 0x08,
        max_message_size=1024 if small else 64 * 1024,
        max_recipients=3 if small else 100,
        max_errors=6 if small else 20,
        max_unknown_commands=3 if small else 10,
    )


def plan(data: bytes) -> tuple[int, list[bytes], list[str]]:
    """Decode a fuzz input: (options, chunks, answers)."""
    options = data[0] if data else 0
    rng = random.Random(data[1] if len(data) > 1 else 0)
    body = data[2:]
    chunks = []
    if rng.random() < 0.75:
        # Mostly a client in lock-step (a chunk ends after each line, as when it waits for
        # each reply), sometimes groups of lines, sometimes a line cut in two.
        keep = rng.choice((1.0, 0.9, 0.6))
        cut = rng.choice((0.0, 0.05, 0.3))
        start = 0
        for i, byte in enumerate(body):
            if (byte == 0x0A and rng.random() < keep) or rng.random() < cut / 40:
                chunks.append(body[start : i + 1])
                start = i + 1
        if start < len(body):
            chunks.append(body[start:])
    else:
        pos = 0
        while pos < len(body):
            n = rng.choice((1, 2, 3, 7, 64, 512, 1500, 4096, 1 << 20))
            chunks.append(body[pos : pos + n])
            pos += n
    if options & 0x80:
        answers = [rng.choice(ANSWERS[:1] * 5 + ANSWERS[1:]) for _ in range(64)]
    else:
        answers = ["accept"]
    return options, chunks, answers


def run_one(data: bytes) -> Harness:
    """Run one fuzz input through the engine; raises on any broken invariant."""
    options, chunks, answers = plan(data)
    pregreet = b""
    if options & 0x20 and chunks:
        pregreet, chunks = chunks[0], chunks[1:]
    h = Harness(
        settings_for(options),
        answers=answers,
        tls_available=bool(options & 0x04),
        pregreet=pregreet,
        probe_misuse=bool(data[1] & 1) if len(data) > 1 else False,
    )
    h.feed_all(chunks)
    if options & 0x40:
        h.feed(b"")
    return h


# -------------------------------------------------------------------- seed corpus
def _session(*lines: bytes) -> bytes:
    return b"".join(lines)


_EHLO = b"EHLO client.example\r\n"
_TX = b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<bob@example.net>\r\nDATA\r\n"
_BODY = b"Subject: hi\r\n\r\nHello.\r\n..dot-stuffed\r\n.\r\n"

SEEDS: tuple[bytes, ...] = (
    b"\x00\x00" + _session(_EHLO, _TX, _BODY, b"QUIT\r\n"),
    b"\x80\x05" + _session(b"HELO client.example\r\n", _TX, _BODY, b"QUIT\r\n"),
    b"\x01\x07" + _session(_EHLO, _TX, b"a\nb\r.\r\nc\r\n\n.\n", _BODY, b"QUIT\r\n"),
    b"\x10\x09"
    + _session(
        _EHLO,
        b"MAIL FROM:<> SIZE=100 BODY=8BITMIME\r\n",
        b"RCPT TO:<Postmaster>\r\nRCPT TO:<a@[192.0.2.1]>\r\nRCPT TO:<b@[IPv6:2001:db8::1]>\r\n",
        b"RCPT TO:<c@x.example>\r\nDATA\r\n",
        b"x" * 1500 + b"\r\n.\r\n",
    ),
    b"\x04\x0b"
    + _session(_EHLO, b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n", _EHLO, _TX, _BODY, b"QUIT\r\n"),
    b"\x00\x0d"
    + _session(
        _EHLO,
        "MAIL FROM:<j\u00f6rg@b\u00fccher.example> SMTPUTF8\r\n".encode(),
        "RCPT TO:<\u00e9l\u00e8ve@\u00e9cole.example>\r\n".encode(),
        b"MAIL FROM:<\xff@x> SMTPUTF8\r\n",
        b"NOOP\r\nRSET\r\nVRFY bob\r\nEXPN list\r\nHELP\r\nBDAT 10 LAST\r\nFOO\r\n",
    ),
    b"\x20\x0f" + b"EHLO early\r\n",
    b"\x00\x11" + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"\x00\x13" + b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    b"\x10\x15" + _session(_EHLO, _TX, b"a\x00b\r\n", b"x" * 3000 + b"\r\n.\r\n", b"NOOP\r\n"),
    b"\x12\x17" + _session(b"HELO c\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"),
    b"\xc1\x19"
    + _session(_EHLO, _TX, b"body\r\n.\r\r\nMAIL FROM:<evil@x>\r\nDATA\r\nx\r\n.\r\n\r\n.\r\n"),
    b"\x00\x1b" + b"A" * 600 + b"\r\nEHLO x\r\nNOOP\nNO\rOP\r\n\r\n",
)

_TOKENS = (
    b"\r",
    b"\n",
    b"\r\n",
    b"\x00",
    b".",
    b"..",
    b"\r\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r\n.\r\r\n",
    b"\xff",
    b"\xc3\xa9",
    b"\x16\x03",
    b" ",
    b"<>",
    b"@",
    b":",
    b"[IPv6:::1]",
    b"[1.2.3.4]",
    b" SIZE=99999999",
    b" SMTPUTF8",
    b" BODY=8BITMIME",
    b"EHLO x\r\n",
    b"HELO x\r\n",
    b"MAIL FROM:<a@b.example>\r\n",
    b"RCPT TO:<c@d.example>\r\n",
    b"DATA\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"STARTTLS\r\n",
    b"VRFY x\r\n",
)


MAX_INPUT = 16 * 1024
"""Longest builtin mutant: past the small-limits message size, short enough to stay fast."""


def mutate(data: bytes, rng: random.Random, corpus: Sequence[bytes]) -> bytes:
    """One to four random byte-level mutations of a fuzz input."""
    buf = bytearray(data or b"\x00\x00")
    for _ in range(rng.randint(1, 4)):
        pos = rng.randint(2, len(buf)) if len(buf) > 2 else len(buf)
        op = rng.randrange(10)
        if op == 0:  # flip the option or chunking byte
            buf[rng.randrange(2)] = rng.randrange(256)
        elif op == 1:
            buf[pos:pos] = rng.choice(_TOKENS)
        elif op == 2:  # long run
            run = rng.choice((254, 255, 256, 510, 511, 512, 513, 998, 999, 1000, 1001, 5000))
            buf[pos:pos] = bytes([rng.choice(b"Ax.\r\n \x00")]) * run
        elif op == 3:
            buf[pos:pos] = rng.randbytes(rng.randint(1, 16))
        elif op == 4 and len(buf) > 2:  # delete a range
            end = min(len(buf), pos + rng.randint(1, 64))
            del buf[pos:end]
        elif op == 5 and len(buf) > 2:  # duplicate a range
            end = min(len(buf), pos + rng.randint(1, 256))
            buf[end:end] = buf[pos:end]
        elif op == 6 and corpus:  # splice with another input
            other = rng.choice(corpus)[2:]
            cut = rng.randint(0, len(other))
            buf[pos:] = other[cut:] if rng.random() < 0.5 else other[:cut] + buf[pos:]
        elif op == 7 and len(buf) > 2:  # overwrite one byte
            buf[rng.randrange(2, len(buf))] = rng.randrange(256)
        elif op == 8 and len(buf) > 2:  # swap CRLF for a bare ending or the reverse
            i = buf.find(b"\r\n", pos)
            if i >= 0:
                buf[i : i + 2] = rng.choice((b"\n", b"\r", b"\r\r\n", b"\n\r", b"\r\n\r\n"))
        else:
            buf[pos:pos] = rng.choice(corpus or SEEDS)[2:]
    if len(buf) > MAX_INPUT:
        del buf[MAX_INPUT:]
    return bytes(buf)


@dataclass
class FuzzResult:
    executions: int
    seconds: float
    failure: BaseException | None = None
    reproducer: bytes | None = None

    @property
    def rate(self) -> float:
        return self.executions / self.seconds if self.seconds else 0.0


def _fails(data: bytes) -> BaseException | None:
    try:
        run_one(data)
    except Exception as exc:
        return exc
    return None


def minimise(data: bytes, budget: float = 5.0) -> bytes:
    """Shrink a failing input while it still fails with the same exception type."""
    first = _fails(data)
    if first is None:
        return data
    kind = type(first)
    deadline = time.monotonic() + budget
    size = max(1, (len(data) - 2) // 2)
    while size >= 1 and time.monotonic() < deadline:
        i = 2
        shrunk = False
        while i < len(data) and time.monotonic() < deadline:
            candidate = data[:i] + data[i + size :]
            exc = _fails(candidate)
            if exc is not None and type(exc) is kind:
                data = candidate
                shrunk = True
            else:
                i += size
        if not shrunk:
            size //= 2
    return data


def fuzz(
    seconds: float = 60.0,
    seed: int = 0,
    *,
    max_executions: int | None = None,
    corpus: Sequence[bytes] = SEEDS,
    progress: Callable[[int, float], None] | None = None,
) -> FuzzResult:
    """The builtin fuzzer: run seeds, then mutants of seeds and of earlier mutants, until
    `seconds` have passed or a failure is found."""
    rng = random.Random(seed)
    pool = list(corpus)
    start = time.monotonic()
    execs = 0
    last_report = start
    queue = list(corpus)
    while True:
        now = time.monotonic()
        if now - start >= seconds or (max_executions is not None and execs >= max_executions):
            return FuzzResult(execs, now - start)
        data = queue.pop() if queue else mutate(rng.choice(pool), rng, pool)
        try:
            run_one(data)
        except Exception as exc:
            return FuzzResult(execs + 1, time.monotonic() - start, exc, data)
        execs += 1
        if rng.random() < 0.05:
            if len(pool) < 512:
                pool.append(data)
            else:
                pool[rng.randrange(len(SEEDS), len(pool))] = data
        if progress is not None and now - last_report >= 10:
            last_report = now
            progress(execs, now - start)


def report_failure(exc: BaseException, data: bytes) -> None:
    print("FAILURE:", "".join(traceback.format_exception_only(exc)).strip(), file=sys.stderr)
    traceback.print_exception(exc, file=sys.stderr)
    small = minimise(data)
    print("\nreproducer (bench/fuzz_engine.py):", file=sys.stderr)
    print(f"    run_one({small!r})", file=sys.stderr)


def _main_builtin(seconds: float, seed: int) -> int:
    def progress(execs: int, elapsed: float) -> None:
        print(f"  {execs} executions, {execs / elapsed:.0f}/s", flush=True)

    result = fuzz(seconds, seed, progress=progress)
    print(
        f"builtin fuzzer: {result.executions} executions in {result.seconds:.1f} s "
        f"({result.rate:.0f}/s), seed {seed}"
    )
    if result.failure is not None:
        assert result.reproducer is not None
        report_failure(result.failure, result.reproducer)
        return 1
    print("no failure")
    return 0


def _main_atheris(seconds: float, seed: int, extra: list[str]) -> int:  # pragma: no cover
    import tempfile
    from pathlib import Path

    import atheris

    atheris.instrument_all()
    corpus_dir = Path(tempfile.mkdtemp(prefix="mailmoat-fuzz-"))
    for i, s in enumerate(SEEDS):
        (corpus_dir / f"seed{i:02d}").write_bytes(s)

    def one_input(data: bytes) -> None:
        try:
            run_one(data)
        except Exception as exc:
            report_failure(exc, data)
            raise

    print(f"atheris: corpus in {corpus_dir}", flush=True)
    args = [
        sys.argv[0],
        f"-max_total_time={int(seconds)}",
        f"-seed={seed}",
        "-max_len=65536",
        "-print_final_stats=1",
        *extra,
        str(corpus_dir),
    ]
    atheris.Setup(args, one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz (60)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    parser.add_argument(
        "--engine",
        choices=("auto", "atheris", "builtin"),
        default="auto",
        help="atheris (coverage-guided) when installed, else builtin",
    )
    parser.add_argument("--replay", help="run one input given as a Python bytes literal")
    args, extra = parser.parse_known_args(argv)
    if args.replay:
        import ast

        run_one(ast.literal_eval(args.replay))
        print("no failure")
        return 0
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "builtin"
        else:
            engine = "atheris"
    if engine == "atheris":
        return _main_atheris(args.seconds, seed, extra)
    return _main_builtin(args.seconds, seed)


if __name__ == "__main__":
    sys.exit(main())
