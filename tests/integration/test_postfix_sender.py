"""A real Postfix as the sending MTA: Postfix -> mailmoat -> Postfix.

The sending Postfix only removes a message from its queue after a 250 for it, and retries
(queue_run_delay 1 s in the sender fixture) after a 4xx. So its queue shows directly whether
mailmoat acknowledged a message, and mailmoat's losslessness is visible from the outside:
downstream down -> 4xx -> the sender keeps the message -> retry -> delivered exactly once.
"""

from __future__ import annotations

import re
import smtplib
import time
from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.ports import free_port
from tests.support.trace import split_mailmoat_received

pytestmark = pytest.mark.peers

MESSAGE = (
    b"From: Sender <s@sender.test>\r\n"
    b"To: Alice <alice@example.test>\r\n"
    b"Subject: Postfix to mailmoat to Postfix\r\n"
    b"Message-ID: <sender-chain-1@sender.test>\r\n"
    b"\r\n"
    b"Hello Alice.\r\n"
    b".a line that starts with a dot\r\n"
    b"\r\n"
    b"Last line.\r\n"
)


def _head_and_body(content: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = content.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _sent_to_mailmoat(log: str, port: int) -> list[str]:
    """The sender's delivery log lines for attempts to mailmoat at 127.0.0.1:port."""
    where = f"relay=127.0.0.1[127.0.0.1]:{port}"
    return [line for line in log.splitlines() if " to=<" in line and where in line]


def test_postfix_sender_through_mailmoat_to_postfix(tmp_path: Path, postfix_instance) -> None:
    downstream = postfix_instance.downstream()
    with running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{downstream.port}"}
    ) as gw:
        sender = postfix_instance.sender(relay_to=("127.0.0.1", gw.port))
        sender.sendmail(MESSAGE, ["alice@example.test"], sender="s@sender.test")
        sender.wait_queue_empty()
        (msg,) = downstream.wait_for_messages("alice")

    # The sender heard 250 from mailmoat (that is why its queue is empty), with mailmoat's id.
    (line,) = _sent_to_mailmoat(sender.log_text(), gw.port)
    assert "status=sent (250 2.0.0 Ok: queued as " in line, line
    qid = re.search(r"queued as ([0-9A-F]+)\)", line).group(1)

    assert msg.envelope_sender == "s@sender.test"
    assert msg.envelope_recipient == "alice@example.test"
    received, rest = split_mailmoat_received(msg.content_crlf)
    assert received.startswith(b"Received: from client.sender.test ([127.0.0.1])\r\n")
    assert f" with ESMTP id {qid}\r\n".encode() in received
    # Below mailmoat's line: the sending Postfix's own trace and header additions (it is a
    # local submission there), then our headers and the body, unchanged.
    head, body = _head_and_body(rest)
    assert head[0].startswith(b"Received: by client.sender.test (Postfix")
    assert body == _head_and_body(MESSAGE)[1]
    for header in _head_and_body(MESSAGE)[0]:
        assert header in head
    assert downstream.messages("bob") == []


def test_downstream_down_sender_keeps_message_then_delivers_once(
    tmp_path: Path, postfix_instance
) -> None:
    down_port = free_port()  # nothing listens here yet: mailmoat's downstream is down
    with running_gateway(
        tmp_path / "md",
        **{"relay.downstream": f"127.0.0.1:{down_port}", "relay.connect_timeout": 2.0},
    ) as gw:
        sender = postfix_instance.sender(relay_to=("127.0.0.1", gw.port))
        sender.sendmail(MESSAGE, ["alice@example.test"], sender="s@sender.test")

        # mailmoat answered the end of DATA with a 4xx: the sender defers and keeps the message
        sender.wait_for_log(
            r"status=deferred \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: 451 4\.4\.1"
        )
        (queued,) = sender.queue()
        assert [r["address"] for r in queued["recipients"]] == ["alice@example.test"]
        assert "451 4.4.1" in queued["recipients"][0]["delay_reason"]
        assert "status=sent" not in sender.log_text()

        # The internal server comes back on the same port; the sender retries and succeeds.
        downstream = postfix_instance.downstream(port=down_port)
        assert downstream.port == down_port, "port was taken meanwhile; rerun"
        sender.flush()
        (msg,) = downstream.wait_for_messages("alice", timeout=15)
        sender.wait_queue_empty(timeout=15)
        time.sleep(1.5)  # a second delivery (a retry after a lost 250) would show by now
        attempts = _sent_to_mailmoat(sender.log_text(), gw.port)

    assert len(downstream.messages("alice")) == 1
    assert downstream.log_text().count("status=sent") == 1
    assert [a for a in attempts if "status=sent" in a] == attempts[-1:]
    assert all("status=deferred" in a for a in attempts[:-1]) and len(attempts) >= 2
    _, rest = split_mailmoat_received(msg.content_crlf)
    assert rest.endswith(_head_and_body(MESSAGE)[1])


def test_smtputf8_through_the_whole_chain(tmp_path: Path, postfix_instance) -> None:
    """A UTF-8 recipient submitted to the sending Postfix with SMTPUTF8: Postfix passes
    SMTPUTF8 on to mailmoat, mailmoat to the downstream Postfix; all three hops say UTF8SMTP."""
    downstream = postfix_instance.downstream(users=("alice", "jörg"))
    content = "Subject: Grüße\r\nFrom: s@sender.test\r\n\r\nHallo Jörg.\r\n".encode()
    with running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{downstream.port}"}
    ) as gw:
        sender = postfix_instance.sender(relay_to=("127.0.0.1", gw.port))
        with smtplib.SMTP("127.0.0.1", sender.port, timeout=10) as c:
            refused = c.sendmail(
                "s@sender.test", ["jörg@example.test"], content, mail_options=["SMTPUTF8"]
            )
            assert refused == {}
        sender.wait_queue_empty()
        (msg,) = downstream.wait_for_messages("jörg")
    assert msg.envelope_recipient == "jörg@example.test"
    assert msg.raw.count(b" with UTF8SMTP id ") == 3
    received, rest = split_mailmoat_received(msg.content_crlf)
    assert b"(mailmoat) with UTF8SMTP id " in received
    assert rest.endswith(b"\r\n\r\nHallo J\xc3\xb6rg.\r\n")


def test_refused_recipient_is_bounced_by_the_sender_not_by_mailmoat(
    tmp_path: Path, postfix_instance
) -> None:
    """mailmoat refuses the foreign recipient inside the session (554 5.7.1 at RCPT, even
    though Postfix pipelined DATA behind it); the sending Postfix owns the message and writes
    the non-delivery report itself. That report (null sender) comes back through mailmoat to
    bob, while alice gets the message once. mailmoat generated nothing (invariant 2)."""
    downstream = postfix_instance.downstream()
    with running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{downstream.port}"}
    ) as gw:
        sender = postfix_instance.sender(relay_to=("127.0.0.1", gw.port))
        sender.sendmail(
            MESSAGE, ["alice@example.test", "x@elsewhere.test"], sender="bob@example.test"
        )
        sender.wait_queue_empty()
        (delivered,) = downstream.wait_for_messages("alice")
        (report,) = downstream.wait_for_messages("bob")
    log = sender.log_text()
    assert re.search(
        r"to=<x@elsewhere\.test>, .*status=bounced \(host 127\.0\.0\.1\[127\.0\.0\.1\] said: "
        r"554 5\.7\.1 Relay access denied \(in reply to RCPT TO command\)\)",
        log,
    ), log
    assert re.search(r"sender non-delivery notification", log)
    assert delivered.envelope_recipient == "alice@example.test"
    assert report.envelope_sender == ""  # the bounce, written by the sending Postfix
    assert report.header("From") == "Mail Delivery System <MAILER-DAEMON@sender.test>"
    assert b"by client.sender.test (Postfix)" in report.raw
    assert "elsewhere.test" not in downstream.log_text()
