"""A real Postfix asking mailmoat's policy service (`check_policy_service`) at RCPT.

Postfix: `smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service
inet:...` and `smtpd_reject_unlisted_recipient = no`, so that every refusal of a recipient
seen here is the policy service's. mailmoat runs only the side service (`server.listen = []`).
"""

from __future__ import annotations

import smtplib
from pathlib import Path
from typing import Any

import pytest

from tests.postfix_policy.test_service import policy_settings
from tests.support.gateway import running_gateway
from tests.support.peer_fixtures import PostfixFactory

pytestmark = pytest.mark.peers

MESSAGE = b"From: s@sender.test\r\nTo: alice@example.test\r\nSubject: hi\r\n\r\nhello\r\n"


def policy_postfix(postfix_instance: PostfixFactory, endpoint: str) -> Any:
    return postfix_instance.downstream(
        main_cf={
            "smtpd_recipient_restrictions": "reject_unauth_destination,"
            f" check_policy_service inet:{endpoint}",
            "smtpd_reject_unlisted_recipient": "no",
            "smtpd_error_sleep_time": "0",
        }
    )


def session(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    smtp = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=(source, 0))
    smtp.ehlo("client.sender.test")
    smtp.mail("s@sender.test")
    return smtp


def test_postfix_asks_the_policy_service(tmp_path: Path, postfix_instance: PostfixFactory) -> None:
    overrides = policy_settings(tmp_path, **{"harvest.tarpit_max": 0.2})
    with running_gateway(tmp_path / "Maildir", **overrides) as gw:
        assert gw.gateway is not None
        postfix = policy_postfix(postfix_instance, overrides["policy.listen"])

        # a known recipient: the policy service says DUNNO, Postfix delivers
        smtp = session(postfix.port)
        assert smtp.rcpt("alice@example.test")[0] == 250
        assert smtp.data(MESSAGE)[0] == 250
        smtp.quit()
        [delivered] = postfix.wait_for_messages("alice")
        assert b"hello" in delivered.content

        # unknown recipients: 550 5.1.1 from the policy service, counted for harvest; the
        # third (harvest.ban_after) bans the client, whose next RCPT gets the uniform 450
        smtp = session(postfix.port)
        for i in range(3):
            code, text = smtp.rcpt(f"guess{i}@example.test")
            said = b"5.1.1 <guess%d@example.test>: Recipient address rejected: no such user" % i
            assert (code, text) == (550, said)
        assert gw.run(gw.gateway.store.count("dha:ip:127.0.0.1", 3600)) == 3
        assert gw.run(gw.gateway.store.get("ban:dha:ip:127.0.0.1")) is not None
        code, text = smtp.rcpt("alice@example.test")
        assert (code, b"4.7.1" in text) == (450, True)
        smtp.close()

        # the banned client's next session: 421 at its first RCPT, and Postfix hangs up
        smtp = session(postfix.port)
        code, text = smtp.rcpt("alice@example.test")
        assert (code, b"4.7.0" in text) == (421, True)
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.noop()
        smtp.close()

        # a ban made by the administrator (`mailmoat ban`) refuses that client too
        gw.run(gw.gateway.defences.bans.ban_manually("127.0.0.3", 600))
        smtp = session(postfix.port, source="127.0.0.3")
        assert smtp.rcpt("bob@example.test")[0] == 421
        smtp.close()
        # and another client still gets its mail through
        smtp = session(postfix.port, source="127.0.0.4")
        assert smtp.rcpt("bob@example.test")[0] == 250
        smtp.quit()

    # the policy service is down: Postfix's own temporary failure, nothing accepted
    smtp = session(postfix.port, source="127.0.0.4")
    code, text = smtp.rcpt("bob@example.test")
    assert (code, b"4.3.5" in text) == (451, True)
    smtp.close()
