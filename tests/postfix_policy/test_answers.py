"""Verdicts as policy actions: never OK, refusals with their own code and status."""

from __future__ import annotations

from mailmoat.policy.base import Decision
from mailmoat.policy.harvest import R_UNIFORM, R_UNKNOWN
from mailmoat.postfix_policy.answers import DUNNO, action
from mailmoat.smtp.replies import Reply, reply


def test_no_refusal_is_dunno_never_ok() -> None:
    assert action(None) == DUNNO
    assert action(Decision(delay=1.5)) == DUNNO
    assert action(reply(250, "2.1.5", "OK")) == DUNNO


def test_refusals_keep_code_status_and_text() -> None:
    assert action(R_UNIFORM) == "450 4.7.1 Requested action not taken, try again later"
    assert action(Decision(R_UNKNOWN, close=True)) == "550 5.1.1 no such user"
    assert action(Reply(554, None, ("first", "second"))) == "554 first second"


def test_text_is_one_clean_line() -> None:
    said = action(reply(550, "5.7.1", "bad\r\nactionzzz=OK\x00"))
    assert "\n" not in said and "\r" not in said and "\x00" not in said
    assert said.startswith("550 5.7.1 bad")


def test_postfix_prefix_is_not_said_twice() -> None:
    assert action(reply(550, "5.7.1", "Client host rejected: go away")) == "550 5.7.1 go away"
    assert action(reply(550, "5.7.1", "Why? Client host rejected: x")).endswith(
        "Why? Client host rejected: x"
    )
