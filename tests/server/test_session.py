"""Small parts of the session: the trace header's date and address literal."""

from __future__ import annotations

import time
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from ipaddress import ip_address

from mailmoat.server import session
from mailmoat.server.session import _address_literal, trace_date


def test_trace_date_is_the_local_time_to_the_second() -> None:
    before = time.time()
    text = trace_date()
    after = time.time()
    when = parsedate_to_datetime(text)
    assert int(before) <= when.timestamp() <= after
    assert text == format_datetime(datetime.fromtimestamp(when.timestamp()).astimezone())
    assert trace_date() in (text, trace_date())  # made once a second, not per call


def test_trace_date_follows_the_clock(monkeypatch) -> None:
    monkeypatch.setattr(session.time, "time", lambda: 1_000_000_000.5)
    first = trace_date()
    monkeypatch.setattr(session.time, "time", lambda: 1_000_000_001.2)
    assert parsedate_to_datetime(trace_date()).timestamp() - 1 == (
        parsedate_to_datetime(first).timestamp()
    )


def test_address_literal() -> None:
    assert _address_literal(ip_address("192.0.2.7")) == "192.0.2.7"
    assert _address_literal(ip_address("2001:db8::1")) == "IPv6:2001:db8::1"
