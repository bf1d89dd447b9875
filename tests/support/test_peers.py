"""Self-tests of the real-peer fixtures: each peer proven against another real one."""

from __future__ import annotations

import socket

import pytest

from tests.support.peer_clients import dot_stuff, smtp_source, swaks
from tests.support.ports import free_port, is_listening
from tests.support.postfix import RELAY
from tests.support.waiting import wait_until

pytestmark = pytest.mark.peers

MESSAGE = (
    b"From: Sender <s@sender.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: peers self-test\r\n"
    b"Message-ID: <peers-self-test@sender.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line that starts with a dot\r\n"
    b"..and one with two\r\n"
    b"\r\n"
    b"Last line.\r\n"
)


def test_free_port_is_bindable_and_not_listening() -> None:
    port = free_port()
    assert not is_listening(port)
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        assert is_listening(port)


def test_dot_stuff() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n"


def test_swaks_to_downstream_delivers_byte_exact(postfix_downstream) -> None:
    pf = postfix_downstream
    rc, transcript = swaks(
        pf.port, "--from", "s@sender.test", "--to", "alice@example.test", data=MESSAGE
    )
    assert rc == 0, transcript
    assert "250 2.0.0 Ok: queued as" in transcript

    (msg,) = pf.wait_for_messages("alice")
    assert msg.content_crlf == MESSAGE
    assert msg.envelope_sender == "s@sender.test"
    assert msg.envelope_recipient == "alice@example.test"
    assert pf.messages("bob") == []
    pf.wait_for_log(r"to=<alice@example\.test>, relay=virtual, .*status=sent")


def test_downstream_refuses_unknown_user_and_relaying(postfix_downstream) -> None:
    pf = postfix_downstream
    rc, transcript = swaks(pf.port, "--from", "s@sender.test", "--to", "carol@example.test")
    assert rc == 24, transcript  # swaks: no recipient accepted
    assert "550 5.1.1 <carol@example.test>: Recipient address rejected" in transcript

    # 127.0.0.1 is outside its mynetworks: no open relay for a mailmoat test to hide behind.
    rc, transcript = swaks(pf.port, "--from", "s@sender.test", "--to", "x@elsewhere.test")
    assert rc == 24, transcript
    assert "554 5.7.1 <x@elsewhere.test>: Relay access denied" in transcript
    assert pf.messages("alice") == []


def test_swaks_to_smtp_sink_dump(smtp_sink) -> None:
    sink = smtp_sink()
    rc, transcript = swaks(
        sink.port,
        "--helo", "client.sender.test",
        "--from", "s@sender.test",
        "--to", "alice@example.test,bob@example.test",
        data=MESSAGE,
    )  # fmt: skip
    assert rc == 0, transcript

    (msg,) = sink.wait_for_messages(1)
    assert msg.client_addr == "127.0.0.1"
    assert msg.proto == "ESMTP"
    assert msg.helo == "client.sender.test"
    assert msg.mail_from == "s@sender.test"
    assert msg.rcpt_to == ["alice@example.test", "bob@example.test"]
    assert msg.data_crlf == MESSAGE


def test_smtp_sink_lmtp_and_scripted_errors(smtp_sink) -> None:
    lmtp = smtp_sink(lmtp=True)
    rc, transcript = swaks(lmtp.port, "--to", "alice@example.test", lmtp=True, data=MESSAGE)
    assert rc == 0, transcript
    assert lmtp.wait_for_messages(1)[0].proto == "LMTP"

    hard = smtp_sink(hard_reject=["RCPT"], hard_reply="550 5.1.1 no such user")
    rc, transcript = swaks(hard.port, "--to", "alice@example.test")
    assert rc == 24, transcript
    assert "550 5.1.1 no such user" in transcript

    soft = smtp_sink(soft_reject=["."])
    rc, transcript = swaks(soft.port, "--to", "alice@example.test", data=MESSAGE)
    assert rc == 26, transcript  # swaks: message refused after the final dot
    assert "450 4.3.0 Error: command failed" in transcript


def test_smtp_source_to_smtp_sink(smtp_sink) -> None:
    sink = smtp_sink()
    rc, output = smtp_source(sink.port, messages=6, sessions=3, size=2000)
    assert rc == 0, output
    msgs = sink.wait_for_messages(6)
    assert len(msgs) == 6
    assert {m.mail_from for m in msgs} == {"source@sender.test"}


def test_postfix_sender_relays_to_smtp_sink(postfix_instance, smtp_sink) -> None:
    sink = smtp_sink()
    sender = postfix_instance.sender(relay_to=("127.0.0.1", sink.port))

    sender.sendmail(MESSAGE, ["alice@example.test"], sender="s@sender.test")
    rc, transcript = swaks(
        sender.port, "--from", "s@sender.test", "--to", "bob@example.test", data=MESSAGE
    )
    assert rc == 0, transcript

    sender.wait_queue_empty()
    msgs = sink.wait_for_messages(2)
    assert sorted(r for m in msgs for r in m.rcpt_to) == ["alice@example.test", "bob@example.test"]
    for m in msgs:
        assert m.mail_from == "s@sender.test"
        assert m.helo == "client.sender.test"
        assert b"Subject: peers self-test\n" in m.data
        assert m.data.endswith(b"\nLast line.\n")


def test_postfix_sender_relays_to_postfix_downstream(postfix_instance) -> None:
    downstream = postfix_instance.downstream()
    sender = postfix_instance.sender(relay_to=("127.0.0.1", downstream.port))

    sender.sendmail(MESSAGE, ["bob@example.test"], sender="s@sender.test")
    sender.wait_queue_empty()
    (msg,) = downstream.wait_for_messages("bob")
    assert msg.envelope_sender == "s@sender.test"
    assert msg.envelope_recipient == "bob@example.test"
    # A locally submitted message gets the sender's own Received and a Date header; the
    # headers we wrote and the body arrive unchanged.
    head, _, body = msg.content_crlf.partition(b"\r\n\r\n")
    assert body == MESSAGE.partition(b"\r\n\r\n")[2]
    for line in MESSAGE.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        assert line in head.split(b"\r\n")


def test_smtp_sink_counter_without_dumps(smtp_sink) -> None:
    sink = smtp_sink(dump=False, counter=True)
    rc, output = smtp_source(sink.port, messages=3, sessions=1, size=500)
    assert rc == 0, output
    wait_until(lambda: sink.count() == 3, "3 messages counted by smtp-sink", describe=sink.log_text)
    assert sink.messages() == []


def test_postfix_relay_passes_its_domain_on_and_nothing_else(postfix_instance, smtp_sink) -> None:
    sink = smtp_sink()
    relay = postfix_instance(RELAY, relay_to=("127.0.0.1", sink.port))
    rc, transcript = swaks(
        relay.port, "--from", "s@sender.test", "--to", "alice@example.test", data=MESSAGE
    )
    assert rc == 0, transcript
    relay.wait_queue_empty()
    (msg,) = sink.wait_for_messages(1)
    assert (msg.mail_from, msg.rcpt_to) == ("s@sender.test", ["alice@example.test"])
    rc, transcript = swaks(relay.port, "--from", "s@sender.test", "--to", "x@elsewhere.test")
    assert rc == 24, transcript
    assert "554 5.7.1 <x@elsewhere.test>: Relay access denied" in transcript
