"""Score promises that mutation testing (scripts/mutation over policy/score.py) found nothing
holding: a check under `tempfail` refuses a failure with 4xx (never the 5xx of `reject`); a
result that is neither a failure nor temporary adds neither points nor pending points (nor
takes any away); the gate refuses from exactly `score.threshold` on, with 4xx while pending
points decide; a single pending point is a temporary failure too; the end of a transaction
drops its sender's results (the session's stay), the end of a session cancels the DNS work
still running for it; and an exempt network written with host bits exempts it."""

from __future__ import annotations

import asyncio

from mailmoat.config import ScoreSettings
from mailmoat.policy.base import Client
from mailmoat.policy.results import ALLOWLISTED, IPREV, SPF, Iprev, SpfResult, SpfResults
from mailmoat.policy.score import (
    R_DNS_TEMP,
    Karma,
    Outcome,
    ScoreGate,
    SessionState,
    apply,
    ip_text,
)
from mailmoat.smtp.events import RcptTo
from mailmoat.smtp.replies import Reply, reply

REFUSAL = reply(550, "5.7.1", "SPF fail")


def _state() -> SessionState:
    return SessionState(Client("192.0.2.50", 1))


def test_tempfail_answers_a_failure_with_4xx_and_reject_with_5xx() -> None:
    verdict = apply(_state(), Outcome("spf", "fail"), "tempfail", REFUSAL, failed=True, points=3)
    assert verdict is not None and (verdict.code, verdict.enhanced) == (450, "4.7.1")
    verdict = apply(_state(), Outcome("spf", "fail"), "reject", REFUSAL, failed=True, points=3)
    assert verdict == REFUSAL
    other = reply(554, "5.7.1", "listed")
    verdict = apply(_state(), Outcome("dnsbl", "listed"), "tempfail", other, failed=True)
    assert verdict is not None and (verdict.code, verdict.enhanced) == (451, "4.7.1")


def test_a_pass_adds_no_points_and_none_pending() -> None:
    st = _state()
    assert apply(st, Outcome("spf", "pass"), "score", REFUSAL, failed=False, points=5) is None
    assert st.totals() == (0, 0)
    apply(st, Outcome("dkim", "temperror"), "score", REFUSAL, failed=False, points=4)
    assert st.totals() == (0, 4)  # a temporary error holds its points pending
    apply(st, Outcome("dnsbl", "listed"), "score", REFUSAL, failed=True, points=2)
    assert st.totals() == (2, 4)
    # under "log" a failure is only reported: it adds nothing, pending or not
    apply(st, Outcome("helo", "fail"), "log", REFUSAL, failed=True, points=3)
    assert st.totals() == (2, 4)


def test_the_address_checked_is_the_plain_ipv4_one_for_a_mapped_client() -> None:
    """The DNS checks (SPF, DNSBL) and Authentication-Results use this text."""
    assert ip_text(Client("::ffff:192.0.2.53", 1)) == "192.0.2.53"
    assert ip_text(Client("192.0.2.53", 1)) == "192.0.2.53"
    assert ip_text(Client("2001:db8::1", 1)) == "2001:db8::1"


def _gate_verdict(points: int, pending: int, allowlisted: bool = False) -> Reply | None:
    karma = Karma(ScoreSettings(threshold=5, action="reject"))
    client = Client("192.0.2.51", 1)
    st = karma.state(client)
    st.set(ALLOWLISTED, allowlisted)
    st.client_outcomes["dnsbl"] = Outcome("dnsbl", "listed", points=points, pending=pending)
    verdict = ScoreGate(karma).rcpt(client, RcptTo("alice@example.test", "example.test"))
    assert verdict is None or isinstance(verdict, Reply)
    return verdict


def test_the_gate_refuses_from_the_threshold_on_and_4xx_while_pending_decides() -> None:
    assert _gate_verdict(4, 0) is None
    refused = _gate_verdict(5, 0)
    assert refused is not None and refused.code == 550
    assert _gate_verdict(7, 0) == refused  # and above it
    assert _gate_verdict(4, 1) == R_DNS_TEMP
    assert _gate_verdict(3, 1) is None
    # an allowlisted client (dnsbl allowlist) passes whatever its score
    assert _gate_verdict(9, 0, allowlisted=True) is None


async def test_the_end_of_a_session_cancels_its_dns_work() -> None:
    karma = Karma(ScoreSettings())
    client = Client("192.0.2.52", 1)
    st = karma.state(client)
    st.start(IPREV, asyncio.Event().wait())  # a lookup that never answers
    [task] = st.tasks.values()
    karma.end(client)
    assert client.state is None and not st.tasks
    await asyncio.sleep(0)
    assert task.cancelled()


def test_one_pending_point_under_reject_is_a_temporary_failure() -> None:
    st = _state()
    verdict = apply(st, Outcome("dnsbl", "clean"), "reject", REFUSAL, failed=False, pending=1)
    assert verdict == R_DNS_TEMP


async def test_a_new_transaction_drops_the_last_senders_results_only() -> None:
    st = _state()
    st.start(SPF, asyncio.Event().wait())  # the last sender's SPF check, still running
    [spf_task] = st.tasks.values()
    st.set(IPREV, Iprev("pass", "mail.sender.test"))  # the client's: it stays
    st.new_transaction()
    assert SPF not in st.tasks and IPREV in st.done
    await asyncio.sleep(0)
    assert spf_task.cancelled()
    st.set(SPF, SpfResults(SpfResult("mailfrom", "sender.test", "fail"), None))
    st.new_transaction()
    assert st.ready(SPF) is None


def test_a_client_checks_points_last_the_session_a_senders_one_transaction() -> None:
    st = _state()
    apply(st, Outcome("dnsbl", "listed"), "score", REFUSAL, failed=True, points=3)
    apply(st, Outcome("spf", "fail"), "score", REFUSAL, failed=True, points=2, per_transaction=True)
    assert st.totals() == (5, 0)
    st.new_transaction()  # the next MAIL
    assert st.totals() == (3, 0)


def test_an_exempt_network_with_host_bits_set_is_exempt() -> None:
    """The setting is validated leniently ("198.51.100.7/24" is accepted): so is its use."""
    karma = Karma(ScoreSettings(exempt_networks=["198.51.100.7/24"]), ["203.0.113.9/30"])
    assert karma.state(Client("198.51.100.200", 1)).exempt
    assert karma.state(Client("203.0.113.10", 1)).exempt
    assert not karma.state(Client("198.51.101.1", 1)).exempt
