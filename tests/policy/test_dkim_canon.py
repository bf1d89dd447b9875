"""The relaxed body canonicalization mailmoat's DKIM verifier uses (policy/dkim_canon.py):
the same octets as dkimpy's for every body, and never dkimpy's regex, whose work is quadratic
in a run of blanks that no CRLF follows (a 1 MB body of 998-octet such lines: 3.6 s of CPU
per signature, against 36 ms for the linear one)."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import dkim
import dkim.canonicalization
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.policy.dkim import DkimVerifier
from mailmoat.policy.dkim_canon import DKIMPY, strip_trailing_whitespace
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

from .test_dkim_variants import as_message

_PIECES = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"\x00", b"\xa0", b"  \r\n"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=60))
def test_same_octets_as_dkimpy(pieces: list[bytes]) -> None:
    body = b"".join(pieces)
    assert strip_trailing_whitespace(body) == DKIMPY(body)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"\r\n",
        b" \r\n",
        b"a \t \r\n",
        b"a \r \r\n",  # a bare CR between blanks: only the blank before the CRLF goes
        b"a \r\r\n",  # a blank before a bare CR stays
        b"a \n",  # a bare LF is no line end
        b" \r\n \r\n\t\r\n",
        b"a  b  \r\nc  ",  # the last line has no CRLF: its blanks stay
        b" " * 997 + b"x\r\n",  # the run no CRLF follows
    ],
)
def test_named_cases(body: bytes) -> None:
    assert strip_trailing_whitespace(body) == DKIMPY(body)


def _quadratic_regex_spy(calls: list[bytes]) -> Any:
    """dkim.canonicalization's `re`, counting the subs with dkimpy's trailing-blank pattern."""

    def sub(pattern: Any, repl: Any, string: Any, **kw: Any) -> Any:
        if pattern == b"[\t ]+\r\n":
            calls.append(pattern)
        return re.sub(pattern, repl, string, **kw)

    return SimpleNamespace(sub=sub)


async def test_a_relaxed_signature_over_blank_runs_passes_without_dkimpys_regex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr(dkim.canonicalization, "re", _quadratic_regex_spy(calls))
    body = ((" " * 900 + "x\r\n") * 50 + "trailing blanks \t \r\n") * 4
    msg = message(body=body)
    signed = (
        dkim.sign(
            msg,
            zone.SELECTOR.encode(),
            b"sender.test",
            zone.dkim_keys().private_pem,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[b"from", b"to", b"subject", b"message-id"],
        )
        + msg
    )
    calls.clear()  # dkimpy's signer used its own
    verifier = DkimVerifier(fake_resolver(ZoneNameserver.from_dnsmasq(zone.records()), timeout=2))
    try:
        found = await verifier.verify(as_message(signed))
    finally:
        verifier.close()
    assert [r.result for r in found] == ["pass"], found
    assert calls == []
