"""Result-slot promises that mutation testing (scripts/mutation over policy/results.py) found
nothing holding: the SPF, DKIM and DMARC results belong to one transaction (the next MAIL FROM
empties them, so a message is never judged or reported with the previous one's results),
while the reverse-DNS result and the allow-list verdict are kept for the session."""

from __future__ import annotations

from mailmoat.policy.base import Client
from mailmoat.policy.results import (
    ALLOWLISTED,
    DKIM,
    DMARC,
    IPREV,
    SPF,
    DkimResult,
    DmarcResult,
    Iprev,
    SpfResult,
    SpfResults,
)
from mailmoat.policy.score import SessionState


def test_message_results_end_with_their_transaction_client_results_stay() -> None:
    st = SessionState(Client("192.0.2.80", 1))
    st.set(SPF, SpfResults(SpfResult("mailfrom", "sender.test", "pass"), None))
    st.set(DKIM, [DkimResult("pass", "sender.test", "sel")])
    st.set(DMARC, DmarcResult("pass", "sender.test", "reject"))
    st.set(IPREV, Iprev("pass", "mail.sender.test"))
    st.set(ALLOWLISTED, True)
    st.new_transaction()  # the next MAIL FROM
    assert (st.ready(SPF), st.ready(DKIM), st.ready(DMARC)) == (None, None, None)
    assert st.ready(IPREV) == Iprev("pass", "mail.sender.test")
    assert st.ready(ALLOWLISTED) is True
