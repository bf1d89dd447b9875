"""Edges of the engine's pieces (smtp/readers.py, data.py, ...) that mutation testing
(scripts/mutation) found no fixed test holding: the command after an over-long line whose end
comes first in the next read is kept; a bare LF that starts a read of message data is refused
(and ends the session) at once, whatever follows it; an address literal is IPv4 or tagged
IPv6, never another tag read as IPv6; <Postmaster> with what may follow a path is read as
any other path's end."""

from __future__ import annotations

import dataclasses

import pytest

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.data import DataReader, DataRefused
from mailmoat.smtp.events import RcptTo, Rejected
from mailmoat.smtp.readers import CommandLineReader, read_path, read_rcpt
from mailmoat.smtp.writers import R_DATA_BARE_EOL, R_SYNTAX_LINE


@pytest.mark.parametrize("rest", [b"\n", b"\r\n", b"xx\r\n"])
def test_the_command_after_an_over_long_line_is_kept_whatever_the_read_holds(rest: bytes) -> None:
    """The end of the dropped line may be the very first octet of the next read."""
    lines = CommandLineReader(512)
    buf = bytearray(b"X" * 600)
    assert lines(buf) == Rejected("line_too_long", R_SYNTAX_LINE)
    assert lines.skipping and not buf
    buf.extend(rest + b"NOOP\r\nQUIT\r\n")
    assert lines(buf) == b"NOOP\r\n"
    assert lines(buf) == b"QUIT\r\n"
    assert lines(buf) is None and not lines.skipping


@pytest.mark.parametrize("after", [b"", b"x" * 2000, b"x" * 10 + b"\r\n.\r\n"])
def test_a_bare_lf_first_in_a_read_of_message_data_ends_the_session(after: bytes) -> None:
    """bare_line_endings = "reject": the bare LF is judged as soon as it is read, not taken
    for part of a long line that follows it (which would only refuse the message, and keep
    the session)."""
    data = DataReader(engine_limits(SmtpSettings()))
    buf = bytearray(b"\n" + after)
    assert data(buf) == DataRefused("bare_eol", R_DATA_BARE_EOL, close=True)


def test_the_engine_limits_cannot_be_changed_in_place() -> None:
    """Every session of a worker shares one `Limits`: none may change another's (a reload
    builds a new value; sessions in flight keep theirs)."""
    limits = engine_limits(SmtpSettings())
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_errors = 1000  # type: ignore[misc]


@pytest.mark.parametrize("literal", ["[Tag1:::1]", "[ZZZZ:::1]", "[ipv4:::1]", "[IPv6:1.2.3.4]"])
def test_an_address_literal_with_another_tag_is_refused(literal: str) -> None:
    """RFC 5321 4.1.3: only "IPv6:" (any case) tags an IPv6 literal; the general form (a tag
    registered with IANA) is not offered, so "[Tag1:::1]" is bad syntax, not ::1."""
    limits = engine_limits(SmtpSettings())
    found = read_path(f"<a@{literal}>", False, allow_null=False, what="recipient", limits=limits)
    assert isinstance(found, Rejected) and found.reply.code == 501
    for good in ("[IPv6:::1]", "[ipv6:2001:db8::1]", "[192.0.2.1]"):
        path = read_path(f"<a@{good}>", False, allow_null=False, what="recipient", limits=limits)
        assert path == (f"a@{good}", good.lower(), "")


def test_postmaster_is_read_like_any_path_up_to_its_parameters() -> None:
    """RFC 5321 4.5.1: <Postmaster> must be accepted; a space after it is tolerated as after
    any path, and a parameter after it is refused as after any path (555, not a 501)."""
    limits = engine_limits(SmtpSettings())

    def rcpt(arg: str) -> RcptTo | Rejected:
        return read_rcpt(arg, False, esmtp=True, smtputf8=False, recipients=0, limits=limits)

    assert rcpt("TO:<Postmaster>") == RcptTo("Postmaster", "")
    assert rcpt("TO:<postmaster> ") == RcptTo("Postmaster", "")
    assert rcpt("TO:<a@b.test> ") == RcptTo("a@b.test", "b.test")
    for arg in ("TO:<Postmaster> NOTIFY=NEVER", "TO:<a@b.test> NOTIFY=NEVER"):
        refused = rcpt(arg)
        assert isinstance(refused, Rejected) and refused.reply.code == 555, arg
    refused = rcpt("TO:<postmaster>x")  # no space: not a parameter, bad syntax
    assert isinstance(refused, Rejected) and refused.reply.code == 501
