"""Not an open relay (invariant 5), seen from real clients and real downstreams.

mailmoat refuses foreign recipients itself, at RCPT, before any downstream is contacted. The
Postfix downstream refuses relaying too (its mynetworks does not include 127.0.0.1) with the
same 554 5.7.1, so these tests prove the refusal is mailmoat's: the downstream's log shows no
MAIL command at all (only mailmoat's start-up connection, which learns its EHLO extensions),
and a control delivery shows that the log would show one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.peer_clients import swaks
from tests.support.trace import split_mailmoat_received

pytestmark = pytest.mark.peers

RELAY_DENIED = "<** 554 5.7.1 Relay access denied"


def _no_mail_at_sink(log: str) -> bool:
    """smtp-sink -v logs every command it receives."""
    return "mail from" not in log.lower()


def _no_mail_at_postfix(log: str) -> bool:
    return "mail=" not in log and " client=localhost" not in log


def _gateway(tmp_path: Path, port: int, **overrides):
    return running_gateway(
        tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{port}", **overrides}
    )


def test_foreign_recipient_refused_and_sink_never_contacted(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink(extra_args=["-v"])  # -v: the sink logs every connection it accepts
    with _gateway(tmp_path, sink.port) as gw:
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "victim@elsewhere.test")
        assert rc == 24, transcript  # swaks: no recipient accepted
        assert RELAY_DENIED in transcript
        assert _no_mail_at_sink(sink.log_text())

        # a mixed list: only the local recipient goes on
        rc, transcript = swaks(
            gw.port, "--from", "s@sender.test", "--to", "victim@elsewhere.test,alice@example.test"
        )
        assert rc == 0, transcript
        assert RELAY_DENIED in transcript
        (msg,) = sink.wait_for_messages(1)
    assert msg.rcpt_to == ["alice@example.test"]
    assert "elsewhere.test" not in sink.log_text()


def test_relay_network_may_send_anywhere(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink()
    with _gateway(tmp_path, sink.port, **{"domains.relay_networks": ["127.0.0.0/8"]}) as gw:
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "friend@elsewhere.test")
        assert rc == 0, transcript
        (msg,) = sink.wait_for_messages(1)
    assert msg.rcpt_to == ["friend@elsewhere.test"]
    split_mailmoat_received(msg.data)


def test_relay_network_elsewhere_does_not_open_relay(tmp_path: Path, smtp_sink) -> None:
    sink = smtp_sink(extra_args=["-v"])
    with _gateway(tmp_path, sink.port, **{"domains.relay_networks": ["10.0.0.0/8"]}) as gw:
        rc, transcript = swaks(gw.port, "--to", "victim@elsewhere.test")
        assert rc == 24, transcript
        assert RELAY_DENIED in transcript
    assert _no_mail_at_sink(sink.log_text())


def test_postfix_relay_protection_does_not_mask_ours(tmp_path: Path, postfix_downstream) -> None:
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port) as gw:
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "victim@elsewhere.test")
        assert rc == 24, transcript
        # mailmoat's wording; Postfix would say "554 5.7.1 <victim@elsewhere.test>: Relay ..."
        assert RELAY_DENIED + "\n" in transcript + "\n"
        assert "<victim@elsewhere.test>: Relay access denied" not in transcript
        assert _no_mail_at_postfix(pf.log_text())

        # control: a local recipient through the same gateway does reach Postfix and its log
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "alice@example.test")
        assert rc == 0, transcript
        pf.wait_for_messages("alice")
    log = pf.log_text()
    assert log.count("]: connect from localhost[127.0.0.1]") == 1
    assert "elsewhere.test" not in log


def test_relay_network_client_still_meets_postfix_relay_check(
    tmp_path: Path, postfix_downstream
) -> None:
    """Defence in depth: with relaying allowed at mailmoat, Postfix (which does not trust
    mailmoat's address) refuses the foreign recipient itself, and the client hears Postfix's
    refusal at the end of DATA instead of a 250. Nothing is delivered anywhere."""
    pf = postfix_downstream
    with _gateway(tmp_path, pf.port, **{"domains.relay_networks": ["127.0.0.0/8"]}) as gw:
        rc, transcript = swaks(gw.port, "--from", "s@sender.test", "--to", "victim@elsewhere.test")
    assert rc == 26, transcript  # swaks: message refused after the final dot
    assert "<** 554 5.7.1 <victim@elsewhere.test>: Relay access denied" in transcript
    pf.wait_for_log(r"NOQUEUE: reject: RCPT from localhost\[127\.0\.0\.1\]: 554 5\.7\.1")
    assert " client=localhost" not in pf.log_text()
