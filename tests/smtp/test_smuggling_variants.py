"""Every SMTP smuggling end-of-data variant as a fixed case at the engine level (SEC Consult's
research, CVE-2023-51764/5/6, and the variants of the follow-up tools), not only as a property.

A smuggling payload hides a second transaction behind a fake end of data. The engine must end
data only at <CR><LF>.<CR><LF>: with bare_line_endings = "reject" the message is refused (554
5.6.0) and nothing after it runs as a command; with "normalise" the fake end and the smuggled
commands stay text of the one message. Either way: one MAIL, one DATA, at most one end of data,
and the smuggled recipient is never seen as a command. Each variant is fed whole, byte by byte,
and cut just after the fake end (a read boundary there is where a lax parser looks for a dot
line), and at the very start of the message as well as after a line of body text."""

from __future__ import annotations

import itertools

import pytest

from mailmoat.smtp.events import DataStart, MailFrom, MessageAborted, MessageEnd, RcptTo
from tests.smtp.test_connection import DATA, DATA_BAD, EHLO, MAIL, RCPT, session

SMUGGLED = b"MAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@y.test>\r\nDATA\r\nsmuggled\r\n.\r\n"
REAL_END = b"\r\n.\r\n"

# Every line-end pair around the dot but those that hold the real <CR><LF>.<CR><LF> (that one
# does end the data, as RFC 5321 says), then the NUL variants.
ENDS = [b"\r\n", b"\n", b"\r", b"\r\r\n", b"\n\r"]
FAKE_ENDS = [
    end
    for end in (before + b"." + after for before, after in itertools.product(ENDS, ENDS))
    if REAL_END not in end
] + [b"\r\n\x00.\r\n", b"\r\n.\x00\r\n", b"\r\n.\r\x00\n", b"\r\x00\n.\r\n"]

# The variants named in the research and in the issue are all in the list.
assert {
    b"\r\n.\n",
    b"\n.\r\n",
    b"\n.\n",
    b"\r.\r",
    b"\r\n.\r",
    b"\r.\r\n",
    b"\n.\r",
    b"\r.\n",
    b"\r\n.\x00\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\r\r\n",
} <= set(FAKE_ENDS)

# Right after DATA the engine is at the start of a line already: a fake end there is only
# the dot and what follows it.
START_ENDS = [b"." + after for after in ENDS if after != b"\r\n"] + [b".\x00\r\n", b"\x00.\r\n"]

CASES = [(b"Subject: hi\r\n\r\nbody", end) for end in FAKE_ENDS] + [
    (b"", end) for end in START_ENDS
]


def _chunks(data: bytes, feed: str, cut: int) -> list[bytes]:
    if feed == "whole":
        return [data]
    if feed == "bytewise":
        return [data[i : i + 1] for i in range(len(data))]
    return [data[:cut], data[cut:]]  # "split": a read boundary right after the fake end


@pytest.mark.parametrize("mode", ["reject", "normalise"])
@pytest.mark.parametrize("feed", ["whole", "bytewise", "split"])
@pytest.mark.parametrize(
    ("head", "fake_end"),
    CASES,
    ids=[("start:" if not h else "") + repr(e)[2:-1] for h, e in CASES],
)
def test_fake_end_of_data_never_ends_the_message(
    head: bytes, fake_end: bytes, feed: str, mode: str
) -> None:
    data = head + fake_end + SMUGGLED + REAL_END
    cut = len(head) + len(fake_end)
    run = session([EHLO, MAIL, RCPT, DATA, *_chunks(data, feed, cut)], bare_line_endings=mode)

    assert len(run.of(MailFrom)) == 1, run.types
    assert len(run.of(DataStart)) == 1, run.types
    assert [ev.address for ev in run.of(RcptTo)] == ["bob@example.net"], run.types
    assert len(run.of(MessageEnd)) <= 1, run.types
    if b"\x00" in fake_end:
        # refused for the NUL, or for a bare CR met first on the same line (reject mode)
        (aborted,) = run.of(MessageAborted)
        assert aborted.reason in (("nul", "bare_eol") if mode == "reject" else ("nul",))
        assert DATA_BAD in run.codes
        assert not run.of(MessageEnd)
    elif mode == "reject":
        assert run.of(MessageAborted) == [MessageAborted("bare_eol")], run.types
        assert run.codes[-1] == DATA_BAD
        assert run.closed
        assert not run.of(MessageEnd)
    else:
        (end,) = run.of(MessageEnd)
        assert b"MAIL FROM:<evil@x.test>\r\n" in run.content
        assert b"RCPT TO:<victim@y.test>\r\n" in run.content
        assert b"smuggled\r\n" in run.content
        assert b"\r" not in run.content.replace(b"\r\n", b"")
        assert b"\n" not in run.content.replace(b"\r\n", b"")
        assert end.size == len(run.content)


@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_the_real_end_of_data_still_ends_it(feed: str) -> None:
    """The control: <CR><LF>.<CR><LF> does end the message, and what follows is a command."""
    data = b"Subject: hi\r\n\r\nbody" + REAL_END + b"NOOP\r\n"
    chunks = [data] if feed == "whole" else [data[i : i + 1] for i in range(len(data))]
    run = session([EHLO, MAIL, RCPT, DATA, *chunks])
    assert len(run.of(MessageEnd)) == 1
    assert run.content == b"Subject: hi\r\n\r\nbody\r\n"
    assert run.types[-1] == "Noop"
