"""The engine's junk-command limit (smtp.max_junk_commands), without a socket."""

from __future__ import annotations

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.connection import CLOSED, ServerConnection
from mailmoat.smtp.events import Command, Rejected
from mailmoat.smtp.writers import R_TOO_MANY_JUNK


def _session(limit: int) -> ServerConnection:
    conn = ServerConnection(engine_limits(SmtpSettings(max_junk_commands=limit)), "mx.test")
    conn.greeting()
    conn.data_to_send()
    return conn


def _command(conn: ServerConnection, line: bytes) -> None:
    conn.receive_data(line)
    assert isinstance(conn.next_event(), Command)
    conn.accept()


def test_junk_commands_past_the_limit_close_the_session() -> None:
    conn = _session(2)
    _command(conn, b"NOOP\r\n")
    _command(conn, b"HELP\r\n")
    conn.data_to_send()
    conn.receive_data(b"NOOP\r\n")
    assert conn.next_event() == Rejected("too_many_junk", R_TOO_MANY_JUNK, "NOOP")
    assert conn.data_to_send() == b"421 4.7.0 Error: too many commands, closing connection\r\n"
    assert conn.next_event() is CLOSED


def test_only_commands_that_move_no_mail_count() -> None:
    conn = _session(1)
    _command(conn, b"HELO c.test\r\n")
    _command(conn, b"MAIL FROM:<a@b.test>\r\n")
    _command(conn, b"RSET\r\n")  # the one junk command allowed
    _command(conn, b"MAIL FROM:<a@b.test>\r\n")
    _command(conn, b"RCPT TO:<b@c.test>\r\n")
    conn.receive_data(b"VRFY b\r\n")
    ev = conn.next_event()
    assert isinstance(ev, Rejected) and ev.reason == "too_many_junk"
