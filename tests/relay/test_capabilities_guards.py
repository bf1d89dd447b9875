"""What the downstream's EHLO may make mailmoat offer, where mutation testing
(scripts/mutation over relay/capabilities.py) found nothing holding: a downstream SIZE below
the header room still leaves a positive limit (SIZE 0 would announce "no limit" while every
message got 552 after DATA), and an absurdly long SIZE parameter is read as no limit, not
parsed (a 5,000-digit number makes int() raise)."""

from __future__ import annotations

from mailmoat import config
from mailmoat.relay.capabilities import HEADER_ROOM, Capabilities, offered_limits


def test_a_tiny_downstream_size_leaves_the_smallest_positive_limit() -> None:
    smtp = config.build({}).smtp
    limits = offered_limits(smtp, Capabilities(size=HEADER_ROOM // 2))
    assert limits.max_message_size == 1
    roomy = offered_limits(smtp, Capabilities(size=HEADER_ROOM + 5000))
    assert roomy.max_message_size == 5000


def test_a_size_parameter_of_thousands_of_digits_is_no_limit() -> None:
    assert Capabilities.of({"SIZE": "9" * 5000}).size == 0
    assert Capabilities.of({"SIZE": "12345"}).size == 12345
