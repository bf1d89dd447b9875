"""The MTA's MAIL and RCPT arguments and our added header fields, as the checks take them."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.milter import arguments
from mailmoat.milter.arguments import fields, mail_params, path


def test_path_drops_brackets_and_a_source_route() -> None:
    assert path("<a@b.test>") == "a@b.test"
    assert path("<>") == ""
    assert path("<@relay.test,@other.test:user@d.test>") == "user@d.test"
    assert path("Postmaster") == "Postmaster"


def test_mail_parameters() -> None:
    assert mail_params(("SIZE=1000", "BODY=8bitmime", "SMTPUTF8")) == (1000, "8BITMIME", True)
    assert mail_params(("BODY=7BIT",)) == (None, "7BIT", False)
    # nonsense is ignored (the MTA has answered it already)
    assert mail_params(("SIZE=x", "SIZE=" + "9" * 30, "BODY=BINARYMIME", "RET=FULL")) == (
        None,
        None,
        False,
    )


def test_fields_of_a_trace_block() -> None:
    trace = b"Authentication-Results: mx.test;\r\n\tspf=pass\r\nX-A: 1\r\n"
    assert fields(trace) == [
        (b"Authentication-Results", b" mx.test;\r\n\tspf=pass"),
        (b"X-A", b" 1"),
    ]
    assert fields(b"") == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([b"a", b"b", b"authentication-results"]), max_size=50))
def test_occurrences_number_each_field_among_its_name(names: list[bytes]) -> None:
    """The index of the MTA's header change (1 for the first field of a name), counted once
    for all fields: the count of earlier fields per removed one was removed x fields."""
    want = [names[: i + 1].count(n) for i, n in enumerate(names)]
    assert arguments.occurrences(names) == want
