"""Property tests of the SMTP engine with hypothesis.

(a) `SessionMachine`: whole sessions from a grammar of good and bad commands, message bodies
    and raw bytes; bench/fuzz_engine.py's `Harness` checks the invariants after every feed.
(b) Chunking independence: the same session cut into reads at arbitrary points gives the
    same events and the same output.
(c) Oracle: dot-stuffed message bodies come out of the engine exactly as they went in.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from bench import fuzz_engine
from hypothesis import given, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.connection import CLOSED, NEED_DATA, PAUSED, Phase, ServerConnection
from mailmoat.smtp.events import (
    Command,
    DataChunk,
    Event,
    MessageAborted,
    MessageEnd,
    Quit,
    Rejected,
    StartTls,
)

Harness = fuzz_engine.Harness
ANSWERS = fuzz_engine.ANSWERS

# --------------------------------------------------------------------- grammar
GOOD_ADDRESSES = [
    b"<a@example.org>",
    b"<first.last+tag@sub.example.net>",
    b'<"quoted local"@example.org>',
    b"<x@[192.0.2.1]>",
    b"<x@[IPv6:2001:db8::1]>",
    b"<@relay.example:x@example.org>",
    "<j\u00f6rg@b\u00fccher.example>".encode(),
]
BAD_ADDRESSES = [
    b"a@example.org",
    b"<a@example.org",
    b"<a..b@example.org>",
    b"<a@[300.0.0.1]>",
    b"<a@[IPv6:zz::1]>",
    b"<" + b"l" * 65 + b"@example.org>",
    b"<a@" + b"d" * 300 + b">",
    b"<\xff@example.org>",
    b"<a\x00@x>",
]
PARAMS = [
    b"",
    b" SIZE=100",
    b" SIZE=99999999999",
    b" BODY=8BITMIME",
    b" BODY=7BIT",
    b" SMTPUTF8",
    b" FOO=bar",
    b" SIZE",
    b" BODY=BINARYMIME",
    b" SIZE=1 SIZE=2",
]
SIMPLE = [
    b"DATA",
    b"RSET",
    b"NOOP",
    b"QUIT",
    b"HELP",
    b"VRFY bob",
    b"EXPN staff",
    b"STARTTLS",
    b"BDAT 1 LAST",
    b"AUTH PLAIN",
    b"GET / HTTP/1.1",
    b"FOO",
    b"",
    b"DATA x",
    b"RSET x",
    b"EHLO",
    b"HELO",
    b"EHLO a b",
    b"NOOP \xc3\xa9",
]

addresses = st.sampled_from(GOOD_ADDRESSES + BAD_ADDRESSES + [b"<>", b"<postmaster>"])
endings = st.sampled_from([b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r\n"])
text_endings = st.sampled_from([b"\r\n"] * 40 + [b"\n", b"\r", b"\r\r\n", b"\n\r\n"])
noise = st.binary(max_size=40)


@st.composite
def command_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 0:
        line = draw(
            st.sampled_from([b"EHLO client.example", b"HELO client.example", b"ehlo [192.0.2.9]"])
        )
    elif kind in (1, 2):
        line = b"MAIL FROM:" + draw(addresses) + draw(st.sampled_from(PARAMS))
    elif kind in (3, 4):
        line = b"RCPT TO:" + draw(addresses) + draw(st.sampled_from([b"", b" NOTIFY=NEVER"]))
    elif kind in (5, 6):
        line = draw(st.sampled_from(SIMPLE))
    elif kind == 7:  # around the 512-octet command line limit
        line = b"NOOP " + b"x" * draw(st.sampled_from([400, 504, 505, 506, 507, 600, 1500]))
    elif kind == 8:
        line = draw(st.sampled_from(SIMPLE)) + draw(noise)
    else:
        line = draw(noise)
    return line + draw(endings)


@st.composite
def message_lines(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        text = b"." * draw(st.integers(1, 3))
    elif kind == 1:
        text = b"y" * draw(st.sampled_from([996, 997, 998, 999, 1000, 1500]))
    elif kind == 2:
        text = b"." + b"y" * draw(st.sampled_from([997, 998, 999]))
    elif kind == 3:
        text = draw(st.sampled_from([b"MAIL FROM:<evil@x>", b"\x00", b"\xff\xfe", b"QUIT"]))
    else:
        text = draw(st.binary(max_size=80))
    return text + draw(text_endings)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    return b"".join(draw(st.lists(message_lines(), max_size=12))) + b"\r\n.\r\n"


GOOD_LINES = [
    b"RSET\r\n",
    b"NOOP\r\n",
    b"VRFY bob\r\n",
    b"HELP\r\n",
    b"QUIT\r\n",
    b"EHLO client.example\r\n",
    b"HELO client.example\r\n",
    b"STARTTLS\r\n",
]


@st.composite
def good_mail(draw: st.DrawFn) -> bytes:
    params = draw(st.sampled_from([b"", b" SIZE=100", b" BODY=8BITMIME", b" SMTPUTF8"]))
    return b"MAIL FROM:" + draw(st.sampled_from([*GOOD_ADDRESSES, b"<>"])) + params + b"\r\n"


good_rcpt = st.sampled_from([*GOOD_ADDRESSES[:6], b"<postmaster>"]).map(
    lambda a: b"RCPT TO:" + a + b"\r\n"
)

ANSWER_LISTS = st.lists(st.sampled_from(("accept",) * 6 + ANSWERS[1:]), min_size=1, max_size=8)


# ------------------------------------------------------------ (a) state machine
class SessionMachine(RuleBasedStateMachine):
    """Random sessions; the Harness raises on any broken invariant:
    - no exception from the engine but the documented RuntimeError/ValueError misuse;
    - every reply line matches ^\\d{3}[ -], ends in CRLF, is at most 512 octets, and every
      answered command and every Rejected event has exactly one reply;
    - the input buffer never exceeds max(max_command_line, max_text_line) + the last chunk;
    - MessageEnd only after an accepted DataStart and at least one accepted RcptTo;
    - DataChunk content has no bare CR or LF and the message never exceeds max_message_size.
    """

    h: Any

    @initialize(
        normalise=st.booleans(),
        pipelining=st.booleans(),
        tls=st.booleans(),
        small=st.booleans(),
        answers=ANSWER_LISTS,
        pregreet=st.sampled_from([b""] * 9 + [b"EHLO early\r\n"]),
        probe_misuse=st.booleans(),
    )
    def start(self, normalise, pipelining, tls, small, answers, pregreet, probe_misuse):
        settings = SmtpSettings(
            bare_line_endings="normalise" if normalise else "reject",
            pipelining=pipelining,
            max_message_size=1024 if small else 64 * 1024,
            max_recipients=2 if small else 100,
            max_errors=8 if small else 20,
            max_unknown_commands=4 if small else 10,
        )
        self.h = Harness(
            settings,
            answers=answers,
            tls_available=tls,
            pregreet=pregreet,
            probe_misuse=probe_misuse,
        )

    def feed_in_pieces(self, data: bytes, cuts: list[int]) -> None:
        bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
        for a, b in itertools.pairwise(bounds):
            if b > a:
                self.h.feed(data[a:b])

    @rule(line=command_lines(), cuts=st.lists(st.integers(0, 2000), max_size=2))
    def command(self, line, cuts):
        self.feed_in_pieces(line, cuts)

    @rule(lines=st.lists(command_lines(), min_size=2, max_size=6))
    def pipelined_group(self, lines):
        self.h.feed(b"".join(lines))

    @rule(
        mail=st.sampled_from(GOOD_ADDRESSES[:5]),
        rcpts=st.integers(1, 3),
        body=bodies(),
        cuts=st.lists(st.integers(0, 20000), max_size=4),
        group=st.booleans(),
    )
    def transaction(self, mail, rcpts, body, cuts, group):
        lines = [b"EHLO client.example\r\n", b"MAIL FROM:" + mail + b"\r\n"]
        lines += [b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(rcpts)] + [b"DATA\r\n"]
        if group:
            self.h.feed(lines[0])
            self.h.feed(b"".join(lines[1:]))
        else:
            for line in lines:
                self.h.feed(line)
        self.feed_in_pieces(body, cuts)

    @rule(body=bodies(), cuts=st.lists(st.integers(0, 20000), max_size=4))
    def message_body(self, body, cuts):
        self.feed_in_pieces(body, cuts)

    @rule(data=st.binary(min_size=1, max_size=3000))
    def raw(self, data):
        self.h.feed(data)

    @rule(n=st.sampled_from([511, 512, 513, 999, 1000, 1001, 5000]), byte=st.sampled_from(b"x.\r"))
    def long_run(self, n, byte):
        self.h.feed(bytes([byte]) * n)

    @rule()
    def end_of_input(self):
        self.h.feed(b"")

    @precondition(lambda self: not self.h.closed)
    @rule()
    def misuse(self):
        conn = self.h.conn
        before = (conn.phase, conn.buffered, conn.errors, conn.envelope)
        for call in (conn.accept, conn.greeting, conn.tls_started):
            with pytest.raises(RuntimeError):
                call()
        with pytest.raises(RuntimeError):
            conn.send(fuzz_engine._R5)
        assert (conn.phase, conn.buffered, conn.errors, conn.envelope) == before
        assert conn.data_to_send() == b""

    @invariant()
    def settled(self):
        conn = self.h.conn
        assert conn.phase in (Phase.COMMAND, Phase.DATA, Phase.CLOSED)
        assert conn.data_to_send() == b""  # the harness collected everything


TestSessions = SessionMachine.TestCase


# ------------------------------------------------------- (b) chunking independence
#
# Pipelining detection depends on *when* bytes arrive: a must-be-last command (EHLO, DATA,
# NOOP, ...) followed by more bytes that arrive before its reply is a protocol violation,
# but the same bytes arriving after the reply are simply the next command. So "the same bytes
# at once" has to be defined per *flight*: the bytes a client sends before it waits for a
# reply. A session here is a list of flights; the baseline feeds each flight in one read. We
# did NOT choose "feed all chunks before draining": receive_data() does nothing that depends
# on how bytes are grouped unless the engine drains in between, so that would compare the
# engine with itself and test nothing.
#
# Flights come from the same liberal grammar as (a), so some break the rules. Each session is
# run three ways:
#   baseline  each flight in one read, drain, answer every command at once;
#   instant   each flight cut at arbitrary points; drain and answer after every read (a
#             server that replies instantly, so a cut is also a pause of the client);
#   slow      the same cuts, but the application answers a command only once the whole
#             flight has arrived (a busy server: the later reads arrive while it waits).
# When the baseline saw no pipelining violation, all three must agree exactly: the events
# (consecutive DataChunks joined), the output bytes, the final state. How much content of
# a message that is later aborted was already passed on legitimately depends on the reads,
# so for aborted or unfinished messages one content must be a prefix of the other.
# When the baseline saw a violation, "instant" legitimately differs (its cut may fall right
# after the offending command, as if the client had waited) and is not compared; "slow" must
# agree up to the offending line, and when that line is a command it held while the rest of
# the flight arrived, end with the 554 5.5.0 too (see the test for the details).
# "instant" is also not compared when the baseline discarded bytes sent after STARTTLS in the
# same flight: "instant" finishes the handshake before those bytes arrive.


@dataclass
class Outcome:
    events: list[Event] = field(default_factory=list)
    output: bytes = b""
    closed: bool = False
    discarded: int = 0


def drive(
    settings: SmtpSettings,
    flights: list[bytes],
    cuts: list[list[int]] | None,
    *,
    slow: bool = False,
    tls_available: bool = False,
) -> Outcome:
    conn = ServerConnection(engine_limits(settings), "mx.test", tls_available=tls_available)
    conn.greeting()
    out = Outcome()
    held: list[Command] = []

    def answer(ev: Command) -> None:
        conn.accept()
        if isinstance(ev, StartTls) and conn.phase is Phase.TLS:
            conn.tls_started()

    def drain(hold: bool) -> None:
        while True:
            ev = conn.next_event()
            if ev is PAUSED:
                assert held, "paused with nothing held"
                return
            if ev in (NEED_DATA, CLOSED):
                return
            assert isinstance(ev, Event)
            out.events.append(ev)
            if isinstance(ev, Command):
                if hold:
                    held.append(ev)
                    return
                answer(ev)

    for i, flight in enumerate(flights):
        if cuts is None:
            pieces = [flight]
        else:
            bounds = sorted({c % (len(flight) + 1) for c in cuts[i]} | {0, len(flight)})
            pieces = [flight[a:b] for a, b in itertools.pairwise(bounds) if b > a]
            pieces = pieces or [flight]  # b"" (end of input) stays one read
        for j, piece in enumerate(pieces):
            conn.receive_data(piece)
            last = j == len(pieces) - 1
            if slow and not last:
                if not held:
                    drain(hold=True)
            else:
                if held:
                    answer(held.pop())
                drain(hold=False)
    out.output = conn.data_to_send()
    out.closed = conn.closing or conn.phase is Phase.CLOSED
    out.discarded = conn.discarded_after_starttls
    return out


def normalised(events: list[Event]) -> tuple[list[Any], list[bytes]]:
    """Events with each delivered message's DataChunks joined into one ("content", bytes);
    contents of aborted or unfinished messages are set apart."""
    out: list[Any] = []
    partial: list[bytes] = []
    content: list[bytes] = []
    for ev in events:
        if isinstance(ev, DataChunk):
            content.append(ev.data)
            continue
        if isinstance(ev, MessageEnd):
            out.append(("content", b"".join(content)))
            content = []
        elif isinstance(ev, MessageAborted):
            partial.append(b"".join(content))
            content = []
        out.append(ev)
    if content:
        partial.append(b"".join(content))
    return out, partial


def assert_same(a: Outcome, b: Outcome) -> None:
    ea, pa = normalised(a.events)
    eb, pb = normalised(b.events)
    assert ea == eb
    assert a.output == b.output
    assert (a.closed, a.discarded) == (b.closed, b.discarded)
    assert len(pa) == len(pb)
    for x, y in zip(pa, pb, strict=True):
        assert x.startswith(y) or y.startswith(x)


def is_sync_violation(ev: Event) -> bool:
    return isinstance(ev, Rejected) and ev.reason == "pipelining"


@st.composite
def safe_bodies(draw: st.DrawFn) -> bytes:
    """Content that does not end before its final CRLF.CRLF, whatever the mode."""
    body = b"".join(draw(st.lists(message_lines(), max_size=10)))
    while b"\n.\r\n" in b"\r\n" + body:
        body = (b"\r\n" + body).replace(b"\n.\r\n", b"\n..\r\n")[2:]
    return body + b"\r\n.\r\n"


@st.composite
def flight_groups(draw: st.DrawFn) -> list[bytes]:
    """One or a few flights, mostly from a well-behaved client, sometimes not."""
    kind = draw(st.integers(0, 19))
    if kind <= 4:  # a transaction, pipelined or in lock-step, with its message
        lines = [draw(good_mail()), *draw(st.lists(good_rcpt, min_size=1, max_size=3)), b"DATA\r\n"]
        body = draw(safe_bodies()) + draw(st.sampled_from([b"", b"QUIT\r\n", b"RSET\r\n"]))
        return ([b"".join(lines)] if draw(st.booleans()) else lines) + [body]
    if kind <= 8:
        return [draw(st.sampled_from(GOOD_LINES))]
    if kind <= 10:  # a pipelinable group, with one must-be-last command at most, at its end
        group = draw(
            st.lists(
                st.one_of(good_mail(), good_rcpt, st.just(b"RSET\r\n")), min_size=1, max_size=4
            )
        )
        return [b"".join(group) + draw(st.sampled_from([b"", b"DATA\r\n", b"NOOP\r\n"]))]
    if kind <= 13:
        return [draw(command_lines())]
    if kind <= 15:
        return [draw(safe_bodies()) + draw(st.one_of(st.just(b""), command_lines()))]
    if kind <= 17:
        return [b"".join(draw(st.lists(command_lines(), min_size=2, max_size=5)))]
    return [draw(st.binary(min_size=1, max_size=600))]


@st.composite
def sessions(draw: st.DrawFn) -> dict[str, Any]:
    first = draw(
        st.sampled_from([b"EHLO client.example\r\n"] * 3 + [b"HELO client.example\r\n", b""])
    )
    rest = [f for group in draw(st.lists(flight_groups(), min_size=1, max_size=8)) for f in group]
    fl = ([first] if first else []) + rest
    if draw(st.booleans()):
        fl.append(b"")  # end of input
    cuts = [draw(st.lists(st.integers(0, 5000), max_size=4)) for _ in fl]
    settings = SmtpSettings(
        bare_line_endings=draw(st.sampled_from(["reject", "normalise"])),
        pipelining=draw(st.sampled_from([True, True, True, False])),
        max_message_size=draw(st.sampled_from([1024, 64 * 1024])),
        max_recipients=draw(st.sampled_from([2, 100])),
    )
    return {"settings": settings, "flights": fl, "cuts": cuts, "tls_available": draw(st.booleans())}


@settings(max_examples=5 * settings().max_examples)  # cheap, and needs many to find things
@given(sessions())
def test_chunking_independence(s):
    note(repr(s["flights"]))
    base = drive(s["settings"], s["flights"], None, tls_available=s["tls_available"])
    slow = drive(
        s["settings"], s["flights"], s["cuts"], slow=True, tls_available=s["tls_available"]
    )
    nb, ns = normalised(base.events)[0], normalised(slow.events)[0]
    violation = next((i for i, ev in enumerate(nb) if is_sync_violation(ev)), None)
    if violation is None:
        assert_same(base, slow)
        if base.discarded == 0:
            instant = drive(
                s["settings"], s["flights"], s["cuts"], tls_available=s["tls_available"]
            )
            assert_same(base, instant)
        return
    # A violation: "slow" agrees up to the offending line. If that line was a command and
    # "slow" held it while the rest of its flight came in, the engine must still end the
    # session with 554 5.5.0 (unless the command was QUIT). If the engine itself refused the
    # line (unknown, syntax...), its reply went out at once and the bytes after it cannot be
    # told from a client that waited for it, so nothing more is compared.
    assert violation == len(nb) - 1 and base.closed
    assert ns[:violation] == nb[:violation]
    if len(ns) > violation and isinstance(ns[violation], Command):
        offending = ns[violation]
        if isinstance(offending, Quit):
            assert slow.closed
        else:
            assert is_sync_violation(ns[violation + 1]), ns[violation + 1 :]
            assert len(ns) == violation + 2 and slow.closed
    elif len(ns) > violation and is_sync_violation(ns[violation]):
        assert slow.closed and len(ns) == violation + 1


def test_chunking_independence_examples():
    """A few fixed sessions through the same three drivers (documentation by example)."""
    settings = SmtpSettings(max_message_size=1024)
    ehlo, tx = b"EHLO c\r\n", b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n"
    fl = [ehlo, tx, b"x" * 300 + b"\r\n" + b"y" * 1500 + b"\x00\r\n.\r\nQUIT\r\n"]
    cuts = [[], [7, 30], [1, 301, 1000, 1800]]
    base = drive(settings, fl, None)
    assert_same(base, drive(settings, fl, cuts))
    assert_same(base, drive(settings, fl, cuts, slow=True))
    # HELO session, MAIL and RCPT in one flight: "slow" sees RCPT arrive while MAIL waits.
    fl = [b"HELO c\r\n", b"MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\n"]
    slow = drive(settings, fl, [[], [25]], slow=True)
    assert is_sync_violation(slow.events[-1])


# ------------------------------------------------------------------- (c) oracle
_line_text = st.binary(max_size=998).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
oracle_lines = st.one_of(
    _line_text,
    _line_text.map(lambda b: b"." + b[:997]),
    st.sampled_from([b"", b".", b"..", b". ", b".\xff", b"y" * 998, b"." + b"y" * 997]),
)


def dot_stuff(lines: list[bytes]) -> bytes:
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


@given(
    lines=st.lists(oracle_lines, max_size=25),
    cuts=st.lists(st.integers(0, 30000), max_size=6),
    mode=st.sampled_from(["reject", "normalise"]),
)
def test_dot_stuffing_oracle(lines, cuts, mode):
    original = b"".join(line + b"\r\n" for line in lines)
    wire = dot_stuff(lines) + b".\r\n"
    settings = SmtpSettings(bare_line_endings=mode)
    fl = [
        b"EHLO c\r\n",
        b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n",
        b"RCPT TO:<c@d.example>\r\n",
        b"DATA\r\n",
        wire,
    ]
    out = drive(settings, fl, [[], [], [], [], cuts])
    content = b"".join(ev.data for ev in out.events if isinstance(ev, DataChunk))
    assert content == original
    ends = [ev for ev in out.events if isinstance(ev, MessageEnd)]
    assert ends == [MessageEnd(size=len(original))]
    assert out.output.endswith(b"250 2.0.0 Ok\r\n")


# -------------------------------------------------------- (d) per-line reference
#
# The engine checks runs of plain lines in C and only the others one by one. A plain
# per-line reading of RFC 5321 and of our limits must give the same verdict and the same
# content, whether the body comes in one read (long runs) or one octet at a time (no runs).
_plain_text = st.binary(max_size=120).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"").lstrip(b".")
)
mixed_lines = st.one_of(_plain_text.map(lambda b: b + b"\r\n"), message_lines())


def reference(wire: bytes, s: SmtpSettings) -> tuple[str, bytes]:
    """("end", content) or (reason, b"") for the first problem, line by line."""
    content = b""
    real_start = True
    for line in re.findall(rb"[^\n]*\n", wire):
        crlf = line.endswith(b"\r\n")
        text = line[:-2] if crlf else line[:-1]
        stuffed = real_start and text.startswith(b".")
        if len(text) + 2 > s.max_text_line + stuffed:
            return "line_too_long", b""
        if real_start and crlf and text == b".":
            return "end", content
        bare = not crlf or b"\r" in text
        if bare and s.bare_line_endings == "reject":
            return "bare_eol", b""
        if b"\x00" in text:
            return "nul", b""
        pieces = text.split(b"\r") if bare else [text]
        if stuffed:
            pieces[0] = pieces[0][1:]
        content += b"".join(p + b"\r\n" for p in pieces)
        if len(content) > s.max_message_size:
            return "message_too_big", b""
        real_start = crlf
    raise AssertionError("the body has no end")


def verdict(events: list[Event]) -> tuple[str, bytes]:
    content = b""
    for ev in events:
        if isinstance(ev, DataChunk):
            content += ev.data
        elif isinstance(ev, MessageEnd):
            assert ev.size == len(content)
            return "end", content
        elif isinstance(ev, Rejected) and ev.reason not in ("too_many_errors",):
            return ev.reason, b""
    raise AssertionError(f"no verdict in {events}")


@settings(max_examples=3 * settings().max_examples)
@given(
    lines=st.lists(mixed_lines, max_size=40),
    cuts=st.lists(st.integers(0, 30000), max_size=4),
    mode=st.sampled_from(["reject", "normalise"]),
    small=st.booleans(),
)
def test_per_line_reference(lines, cuts, mode, small):
    s = SmtpSettings(bare_line_endings=mode, max_message_size=1024 if small else 64 * 1024)
    wire = b"".join(lines) + b"\r\n.\r\nQUIT\r\n"
    expected = reference(wire, s)
    head = [b"EHLO c\r\n", b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n"]
    head += [b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n"]
    whole = drive(s, [*head, wire], None)
    assert verdict(whole.events[4:]) == expected
    octets = drive(s, [*head, wire], [[], [], [], [], list(range(len(wire)))])
    assert verdict(octets.events[4:]) == expected
    cut = drive(s, [*head, wire], [[], [], [], [], cuts])
    assert verdict(cut.events[4:]) == expected
