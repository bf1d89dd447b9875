"""What the downstream's EHLO may make mailmoat offer, where mutation testing
(scripts/mutation over relay/capabilities.py) found nothing holding: a downstream SIZE below
the header room still leaves a positive limit (SIZE 0 would announce "no limit" while every
message got 552 after DATA), and an absurdly long SIZE parameter is read as no limit, not
parsed (a 5,000-digit number makes int() raise); a declared SIZE exactly at the downstream's
limit is taken (RFC 1870 refuses only what exceeds it); the Maildir takes SMTPUTF8 and
8BITMIME; and the offer made for a pair of settings and capabilities is the same each time."""

from __future__ import annotations

from mailmoat import config
from mailmoat.policy.base import Client
from mailmoat.relay import MaildirDelivery
from mailmoat.relay.capabilities import (
    HEADER_ROOM,
    Capabilities,
    CapabilityCheck,
    offered_limits,
)
from mailmoat.smtp.events import MailFrom

CLIENT = Client("192.0.2.60", 1)


class Known:
    """A delivery whose downstream was reached: its capabilities are known."""

    def __init__(self, caps: Capabilities) -> None:
        self.capabilities = caps

    async def learn(self) -> None:
        return None


def test_a_tiny_downstream_size_leaves_the_smallest_positive_limit() -> None:
    smtp = config.build({}).smtp
    limits = offered_limits(smtp, Capabilities(size=HEADER_ROOM // 2))
    assert limits.max_message_size == 1
    roomy = offered_limits(smtp, Capabilities(size=HEADER_ROOM + 5000))
    assert roomy.max_message_size == 5000


def test_a_size_parameter_of_thousands_of_digits_is_no_limit() -> None:
    assert Capabilities.of({"SIZE": "9" * 5000}).size == 0
    assert Capabilities.of({"SIZE": "12345"}).size == 12345


def test_a_declared_size_at_the_downstreams_limit_is_taken_one_more_refused() -> None:
    check = CapabilityCheck(Known(Capabilities(size=HEADER_ROOM + 1000)))
    assert check.mail(CLIENT, MailFrom("a@sender.test", size=1000)) is None
    refused = check.mail(CLIENT, MailFrom("a@sender.test", size=1001))
    assert refused is not None and getattr(refused, "code", None) == 552


def test_the_maildir_takes_smtputf8_and_8bitmime() -> None:
    check = CapabilityCheck(MaildirDelivery(config.build({})))
    mail = MailFrom("a@sender.test", size=10, body="8BITMIME", smtputf8=True)
    assert check.mail(CLIENT, mail) is None


def test_the_offer_for_the_same_settings_and_capabilities_is_made_once() -> None:
    smtp = config.build({}).smtp
    caps = Capabilities(smtputf8=False, size=HEADER_ROOM + 7000)
    first = offered_limits(smtp, caps)
    assert not first.smtputf8 and first.max_message_size == 7000
    assert offered_limits(smtp, caps) is first
