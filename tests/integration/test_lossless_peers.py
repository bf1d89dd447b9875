"""Invariant 1 with real downstreams: the client hears 250 only when the downstream accepted the
message for every recipient. smtp-sink refuses, drops and stalls on request; a real Postfix
refuses an unknown user. The client (swaks) must get the downstream's 5xx or a 4xx, never a 250.

tests/server/test_lossless.py proves the same rules against a scripted Python downstream; here
the downstreams are the programs the gateway will face.

Note on smtp-sink dumps: smtp-sink writes its dump file as the data arrives and keeps it even
when it then refuses the end of data (-f . / -r .), so for refusals at "." its dump says nothing
about acceptance. Where the refusal comes before the data, the dump must stay empty.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.gateway import running_gateway
from tests.support.peer_clients import swaks
from tests.support.trace import split_mailmoat_received

pytestmark = pytest.mark.peers

MESSAGE = (
    b"From: s@sender.test\r\n"
    b"To: alice@example.test\r\n"
    b"Subject: must not be lost\r\n"
    b"\r\n"
    b".dot line\r\n"
    b"body\r\n"
)

FAST = {
    "relay.connect_timeout": 2.0,
    "relay.command_timeout": 2.0,
    "relay.data_timeout": 2.0,
}


def _gateway(tmp_path: Path, port: int, **overrides: Any):
    return running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{port}", **FAST, **overrides}
    )


def _final_reply(transcript: str) -> str:
    """The server's reply to the end of data ('' if swaks never got that far)."""
    lines = transcript.splitlines()
    try:
        dot = max(i for i, line in enumerate(lines) if line == " -> .")
    except ValueError:
        return ""
    replies = [line[4:] for line in lines[dot + 1 :] if line.startswith(("<- ", "<**"))]
    return replies[0] if replies else ""


def _send(port: int, to: str = "alice@example.test") -> tuple[int, str, str]:
    rc, transcript = swaks(port, "--from", "s@sender.test", "--to", to, data=MESSAGE, timeout=20)
    return rc, transcript, _final_reply(transcript)


SCENARIOS = [
    # id, smtp-sink options, gateway overrides, expected reply (regex), dump must stay empty
    (
        "rcpt-550",
        {"hard_reject": ["RCPT"], "hard_reply": "550 5.1.1 <alice@example.test>: no such user"},
        {},
        r"550 5\.1\.1 <alice@example\.test>: no such user",
        True,
    ),
    ("rcpt-450", {"soft_reject": ["RCPT"]}, {}, r"450 4\.3\.0 Error: command failed", True),
    (
        "mail-553",
        {"hard_reject": ["MAIL"], "hard_reply": "553 5.1.8 sender refused"},
        {},
        r"553 5\.1\.8 sender refused",
        True,
    ),
    (
        "data-554",
        {"hard_reject": ["DATA"], "hard_reply": "554 5.7.1 no data for you"},
        {},
        r"554 5\.7\.1 no data for you",
        True,
    ),
    ("data-450", {"soft_reject": ["DATA"]}, {}, r"450 4\.3\.0 ", True),
    (
        "dot-554",
        {"hard_reject": ["."], "hard_reply": "554 5.7.1 spam refused"},
        {},
        r"554 5\.7\.1 spam refused",
        False,
    ),
    ("dot-450", {"soft_reject": ["."]}, {}, r"450 4\.3\.0 ", False),
    # smtp-sink's default hard reply is "500 5.3.0": a 500 says the downstream did not
    # understand mailmoat, nothing about the message, so the client gets a 4xx and retries.
    ("dot-500", {"hard_reject": ["."]}, {}, r"451 4\.5\.0 ", False),
    # a downstream that refuses the session itself: greeting or EHLO not positive
    ("greeting-500", {"hard_reject": ["CONNECT"]}, {}, r"451 4\.3\.2 ", True),
    ("greeting-450", {"soft_reject": ["CONNECT"]}, {}, r"451 4\.3\.2 ", True),
    ("ehlo-450", {"soft_reject": ["EHLO"]}, {}, r"451 4\.3\.2 ", True),
    ("mail-421", {"reply_421": ["MAIL"]}, {}, r"451 4\.", True),
    ("rcpt-421", {"reply_421": ["RCPT"]}, {}, r"451 4\.", True),
    ("drop-at-ehlo", {"disconnect": ["EHLO"]}, {}, r"451 4\.", True),
    ("drop-at-mail", {"disconnect": ["MAIL"]}, {}, r"451 4\.4\.2 ", True),
    ("drop-at-rcpt", {"disconnect": ["RCPT"]}, {}, r"451 4\.4\.2 ", True),
    ("drop-at-data", {"disconnect": ["DATA"]}, {}, r"451 4\.4\.2 ", True),
    ("drop-at-dot", {"disconnect": ["."]}, {}, r"451 4\.4\.2 ", False),
    # slow DATA reply (the 354): bounded by relay.command_timeout
    ("slow-354", {"data_delay": 4}, {"relay.command_timeout": 0.5}, r"451 4\.4\.2 ", True),
    # slow reply to the end of data: bounded by relay.data_timeout
    ("slow-dot", {"command_delay": {".": 4}}, {"relay.data_timeout": 0.5}, r"451 4\.4\.2 ", False),
    # 550 right after the 354, and the sink stops reading
    ("abort-after-354", {"abort_after_data": 0}, {}, r"(550|451) ", False),
]


@pytest.mark.parametrize(
    ("sink_options", "overrides", "expected", "dump_empty"),
    [pytest.param(*s[1:], id=s[0]) for s in SCENARIOS],
)
def test_downstream_refusal_or_failure_never_gives_250(
    tmp_path: Path,
    smtp_sink,
    sink_options: dict,
    overrides: dict,
    expected: str,
    dump_empty: bool,
) -> None:
    sink = smtp_sink(**sink_options)
    with _gateway(tmp_path, sink.port, **overrides) as gw:
        rc, transcript, final = _send(gw.port)
    # (a timeout not applied would let the slow sink answer 354/250 later: not a 451)
    assert rc == 26, transcript  # swaks: the message was refused after the final dot
    assert re.match(expected, final), transcript
    assert "queued as" not in transcript
    if dump_empty:
        time.sleep(0.2)  # let smtp-sink notice the dropped connection
        assert sink.messages() == [], sink.log_text()


def test_each_failure_leaves_the_gateway_able_to_deliver(tmp_path: Path, smtp_sink) -> None:
    """After a downstream dropped the connection mid-transaction, the next message gets a new
    connection and goes through: a failure is never remembered as a success or vice versa."""
    flaky = smtp_sink(disconnect=["."])
    good = smtp_sink()
    with _gateway(tmp_path, flaky.port) as gw:
        rc, transcript, final = _send(gw.port)
        assert rc == 26 and final.startswith("451 4.4.2 "), transcript
    with _gateway(tmp_path, good.port) as gw:
        rc, transcript, final = _send(gw.port)
        assert rc == 0 and final.startswith("250 2.0.0 Ok: queued as "), transcript
    (msg,) = good.wait_for_messages(1)
    assert split_mailmoat_received(msg.data)[1] == MESSAGE.replace(b"\r\n", b"\n")


def test_downstream_without_ehlo_gets_helo(tmp_path: Path, smtp_sink) -> None:
    """An old server that refuses EHLO (5xx) is spoken to with HELO and no extensions."""
    sink = smtp_sink(hard_reject=["EHLO"])
    with _gateway(tmp_path, sink.port) as gw:
        rc, transcript, final = _send(gw.port)
        assert rc == 0 and final.startswith("250 2.0.0 Ok: queued as "), transcript
        (msg,) = sink.wait_for_messages(1)
    assert msg.proto == "SMTP"
    assert msg.mail_args == "<s@sender.test>"  # no SIZE= or BODY= without ESMTP
    assert split_mailmoat_received(msg.data)[1] == MESSAGE.replace(b"\r\n", b"\n")


def test_postfix_unknown_user_refuses_the_whole_message(tmp_path: Path, postfix_downstream) -> None:
    """mailmoat takes both recipients (it has no recipient list yet); Postfix refuses carol with
    550 5.1.1 at RCPT. The client gets that 550 5.1.1 at the end of DATA, and alice gets nothing
    either: mailmoat never sends a message for part of the recipients it acknowledged."""
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port) as gw:
        rc, transcript, final = _send(gw.port, to="alice@example.test,carol@example.test")
        assert rc == 26, transcript
        assert final.startswith("550 5.1.1 <carol@example.test>: Recipient address rejected"), (
            transcript
        )
    pf.wait_for_log(r"reject: RCPT from localhost\[127\.0\.0\.1\]: 550 5\.1\.1 <carol@")
    # Postfix had answered the pipelined DATA with 354; mailmoat hung up instead of sending
    # a message for alice alone, and Postfix threw the half transaction away.
    pf.wait_for_log(r"lost connection after DATA \(0 bytes\) from localhost")
    pf.wait_for_log(r"disconnect from localhost.* data=0/1")
    time.sleep(0.3)
    assert pf.messages("alice") == []
    log = pf.log_text()
    assert not re.search(r"qmgr\[\d+\]: \w+: from=", log)  # nothing reached the queue
    assert "status=sent" not in log


# ---- LMTP ---------------------------------------------------------------------------------


def test_lmtp_downstream_delivers(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink(lmtp=True)
    with _gateway(tmp_path, sink.port, **{"relay.protocol": "lmtp"}) as gw:
        rc, transcript, final = _send(gw.port, to="alice@example.test,bob@example.test")
        assert rc == 0, transcript
        assert final.startswith("250 2.0.0 Ok: queued as "), transcript
        (msg,) = sink.wait_for_messages(1)
    assert msg.proto == "LMTP"
    assert msg.helo == "mx.mailmoat.test"
    assert msg.rcpt_to == ["alice@example.test", "bob@example.test"]
    assert split_mailmoat_received(msg.data)[1] == MESSAGE.replace(b"\r\n", b"\n")


@pytest.mark.parametrize(
    ("sink_options", "overrides", "expected"),
    [
        pytest.param(
            {"hard_reject": ["."], "hard_reply": "552 5.2.2 mailbox full"},
            {},
            r"552 5\.2\.2 mailbox full",
            id="per-recipient-552",
        ),
        pytest.param({"soft_reject": ["."]}, {}, r"451 4\.3\.0 ", id="per-recipient-450"),
        pytest.param({"disconnect": ["."]}, {}, r"451 4\.4\.2 ", id="drop-after-data"),
        pytest.param(
            {"command_delay": {".": 4}}, {"relay.data_timeout": 0.5}, r"451 4\.4\.2 ", id="slow"
        ),
    ],
)
def test_lmtp_failure_after_data_never_gives_250(
    tmp_path: Path, smtp_sink, sink_options: dict, overrides: dict, expected: str
) -> None:
    """LMTP answers the end of data once per recipient. smtp-sink gives every recipient the
    same answer (it cannot fail just one); each of those per-recipient replies is a refusal,
    and the client must hear one, not a 250."""
    sink = smtp_sink(lmtp=True, **sink_options)
    with _gateway(tmp_path, sink.port, **{"relay.protocol": "lmtp", **overrides}) as gw:
        rc, transcript, final = _send(gw.port, to="alice@example.test,bob@example.test")
    assert rc == 26, transcript
    assert re.match(expected, final), transcript
    assert "queued as" not in transcript
