"""Real SMTP clients (swaks, Postfix's smtp-source) sending through mailmoat to smtp-sink, and
pipelining as real clients do it and as a misbehaving one does it.

smtplib through the gateway is covered in tests/server; here the clients are the programs
people point at mail servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.peer_clients import smtp_source, swaks
from tests.support.raw_client import RawClient
from tests.support.trace import mailmoat_queue_id, split_mailmoat_received

pytestmark = pytest.mark.peers

MESSAGE = (
    b"From: Sender <s@sender.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: through mailmoat\r\n"
    b"Message-ID: <clients-1@sender.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b"\r\n"
    b"Last line.\r\n"
)


def _gateway(tmp_path: Path, sink_port: int, **overrides):
    return running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{sink_port}", **overrides}
    )


def test_swaks_through_mailmoat_arrives_at_sink(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port) as gw:
        rc, transcript = swaks(
            gw.port,
            "--helo", "client.sender.test",
            "--from", "s@sender.test",
            "--to", "alice@example.test,bob@example.test",
            data=MESSAGE,
        )  # fmt: skip
        assert rc == 0, transcript
        assert "<-  250 2.0.0 Ok: queued as " in transcript
        (msg,) = sink.wait_for_messages(1)

    # The sink saw mailmoat's own session, not the client's: its HELO name, the envelope.
    assert msg.helo == "mx.mailmoat.test"
    assert msg.proto == "ESMTP"
    assert msg.mail_from == "s@sender.test"
    assert msg.rcpt_to == ["alice@example.test", "bob@example.test"]
    received, rest = split_mailmoat_received(msg.data)
    assert received.startswith(b"Received: from client.sender.test ([127.0.0.1])\n")
    assert b" with ESMTP id " in received
    assert rest == MESSAGE.replace(b"\r\n", b"\n")  # smtp-sink dumps LF line ends
    # The queue id the client was told is the one in the trace header.
    assert f"Ok: queued as {mailmoat_queue_id(msg.data)}" in transcript


def test_smtp_source_parallel_sessions_all_arrive(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port) as gw:
        rc, output = smtp_source(
            gw.port, messages=50, sessions=5, size=3000, sender="load@sender.test"
        )
        assert rc == 0, output
        msgs = sink.wait_for_messages(50, timeout=20)

    assert len(msgs) == 50
    for m in msgs:
        assert m.mail_from == "load@sender.test"
        assert m.rcpt_to == ["alice@example.test"]
        assert m.helo == "mx.mailmoat.test"
        received, rest = split_mailmoat_received(m.data)
        # smtp-source says HELO, so mailmoat records plain SMTP
        assert received.startswith(b"Received: from smtp-source.test ([127.0.0.1])\n")
        assert b" with SMTP id " in received
        assert rest.startswith(b"From: <load@sender.test>\nTo: <alice@example.test>\n")
    # 50 distinct transactions, not one message stored 50 times
    assert len({mailmoat_queue_id(m.data) for m in msgs}) == 50
    ids = {line for m in msgs for line in m.data.split(b"\n") if line.startswith(b"Message-Id:")}
    assert len(ids) == 50


def test_smtp_source_several_recipients_one_connection(tmp_path: Path, smtp_sink) -> None:
    """-d: many transactions per client connection; -r 3: three recipients per message.
    smtp-source sends them as RCPT 3alice@, 2alice@, alice@ (checked with -v); mailmoat relays
    them in the client's order."""
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port) as gw:
        rc, output = smtp_source(gw.port, messages=20, sessions=2, recipients=3, extra_args=["-d"])
        assert rc == 0, output
        msgs = sink.wait_for_messages(20)

    assert len(msgs) == 20
    for m in msgs:
        assert m.mail_from == "source@sender.test"
        assert m.rcpt_to == ["3alice@example.test", "2alice@example.test", "alice@example.test"]
        # several recipients: no "for <...>" clause in the trace header
        assert b"\tfor <" not in split_mailmoat_received(m.data)[0]


def test_swaks_pipelining_through_mailmoat(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port) as gw:
        rc, transcript = swaks(
            gw.port, "--pipeline", "--from", "s@sender.test", "--to", "alice@example.test",
            data=MESSAGE,
        )  # fmt: skip
        assert rc == 0, transcript
        (msg,) = sink.wait_for_messages(1)
    # swaks really pipelined: MAIL, RCPT and DATA went out before the first reply came back
    lines = [line for line in transcript.splitlines() if line[:3] in (" ->", "<- ")]
    mail = next(i for i, line in enumerate(lines) if line.startswith(" -> MAIL FROM"))
    assert [line[:8] for line in lines[mail : mail + 6]] == [
        " -> MAIL",
        " -> RCPT",
        " -> DATA",
        "<-  250 ",
        "<-  250 ",
        "<-  354 ",
    ]
    assert msg.rcpt_to == ["alice@example.test"]
    assert split_mailmoat_received(msg.data)[1] == MESSAGE.replace(b"\r\n", b"\n")


def test_pipelining_after_ehlo_is_refused_and_nothing_is_relayed(tmp_path: Path, smtp_sink) -> None:
    """RFC 2920: EHLO ends a command group. A client that sends MAIL without waiting for the
    EHLO reply does not speak SMTP (or is a spam engine): 554 5.5.0, connection closed."""
    sink = smtp_sink(extra_args=["-v"])  # -v logs every connection the sink accepts
    with _gateway(tmp_path, sink.port) as gw:
        with RawClient(gw.port) as c:
            c.expect(220)
            c.send(
                b"EHLO client.sender.test\r\nMAIL FROM:<s@sender.test>\r\n"
                b"RCPT TO:<alice@example.test>\r\nDATA\r\n"
            )
            replies = c.replies_until_closed()
    codes = [r.code for r in replies]
    assert 554 in codes, replies
    bad = next(r for r in replies if r.code == 554)
    assert bad.text.startswith("5.5.0 "), bad
    assert "synchronization" in bad.text
    assert all(r.code not in (250, 354) for r in replies[codes.index(554) :])
    assert 354 not in codes
    assert sink.messages() == []
    # mailmoat never began a downstream transaction (its start-up connection only says EHLO)
    assert "mail from" not in sink.log_text().lower()


def test_swaks_pipelining_with_a_refused_recipient(tmp_path: Path, smtp_sink) -> None:
    """A refused RCPT inside a pipelined group: the other recipient and DATA still go ahead,
    and only the accepted recipient reaches the downstream. With no recipient left, DATA gets
    503 and no 354, so the pipelining client sends no message text."""
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port) as gw:
        rc, transcript = swaks(
            gw.port, "--pipeline", "--to", "x@elsewhere.test,alice@example.test", data=MESSAGE
        )
        assert rc == 0, transcript
        assert "<** 554 5.7.1 Relay access denied" in transcript
        (msg,) = sink.wait_for_messages(1)
        assert msg.rcpt_to == ["alice@example.test"]

        rc, transcript = swaks(gw.port, "--pipeline", "--to", "x@elsewhere.test")
        assert rc == 24, transcript
        assert "<** 503 5.5.1 Error: need RCPT command" in transcript
        assert "<-  354" not in transcript
    assert len(sink.messages()) == 1


def test_message_text_pipelined_behind_data_is_refused(tmp_path: Path, smtp_sink) -> None:
    """Message text sent before the 354 arrived (the client did not wait for DATA's reply):
    a synchronization error, the connection closes, nothing is relayed."""
    sink = smtp_sink(extra_args=["-v"])
    with _gateway(tmp_path, sink.port) as gw:
        with RawClient(gw.port) as c:
            c.expect(220)
            c.command(b"EHLO client.sender.test\r\n")
            c.send(
                b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<alice@example.test>\r\nDATA\r\n"
                + MESSAGE
                + b".\r\nQUIT\r\n"
            )
            replies = c.replies_until_closed()
    codes = [r.code for r in replies]
    assert codes[:2] == [250, 250], replies
    assert replies[-1].code == 554 and replies[-1].text.startswith("5.5.0 "), replies
    assert 354 not in codes
    assert sink.messages() == []
    assert "mail from" not in sink.log_text().lower()
