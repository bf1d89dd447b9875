"""dkimpy's quadratic regular expressions, replaced by linear ones (policy/dkim_linear.py):
the same matches as dkimpy's for every input (hypothesis and named cases), and dkimpy's own
never run where an attacker's white space reaches them. Before: a 1 MB relaxed body of
998-octet blank lines cost 3.6 s of CPU per signature (now 36 ms); " b" and 8,000 folded
empty lines in a signature field 5.5 s; a b= of a letter, 8,000 blanks and a "!" 0.44 s,
twice (commands in the commit messages)."""

from __future__ import annotations

import re
import tracemalloc
from typing import Any

import dkim
import dkim.canonicalization
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.policy import dkim_linear
from mailmoat.policy.dkim import DkimVerifier
from mailmoat.policy.dkim_linear import DKIMPY_BTAG, DKIMPY_PARSE, DKIMPY_STRIP, bad_b_value
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

from .test_dkim_variants import as_message

_BODY = [b" ", b"\t", b"\r", b"\n", b"\r\n", b"a", b"\x00", b"\xa0", b"  \r\n"]
_FIELD = [b" ", b"\t", b"\r\n ", b"\r", b"\n", b"\f", b"b", b"=", b";", b"A", b"x", b"!", b" b="]
_MESSAGE = [b"a", b":", b"From ", b"\r", b"\n", b"\r\n", b" ", b"\t", b"x: y", b"\r\n\r\n", b"\x7f"]
DKIMPY_BASE64 = rb"[\s0-9A-Za-z+/]+[\s=]*$"


def _bytes(pieces: list[bytes]) -> st.SearchStrategy[bytes]:
    return st.lists(st.sampled_from(pieces), max_size=60).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(_bytes(_BODY))
def test_body_canonicalization_is_dkimpys(body: bytes) -> None:
    assert dkim_linear.strip_trailing_whitespace(body) == DKIMPY_STRIP(body)


@settings(max_examples=400, deadline=None)
@given(_bytes(_FIELD))
def test_btag_is_dkimpys(value: bytes) -> None:
    assert dkim_linear.RE_BTAG.sub(b"\\1", value) == DKIMPY_BTAG.sub(b"\\1", value)


@settings(max_examples=400, deadline=None)
@given(_bytes(_FIELD))
def test_base64_check_is_dkimpys(value: bytes) -> None:
    assert (bad_b_value(value) == "") == (re.match(DKIMPY_BASE64, value) is not None)


def _outcome(parse: Any, message: bytes) -> Any:
    try:
        return parse(message)
    except Exception as err:  # dkimpy's own: MessageFormatError, IndexError
        return type(err)


@settings(max_examples=1000, deadline=None)
@given(_bytes(_MESSAGE))
def test_message_parse_is_dkimpys(message: bytes) -> None:
    assert _outcome(dkim_linear.rfc822_parse, message) == _outcome(DKIMPY_PARSE, message)


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\r\n",
        b"a: b",
        b"a: b\r\n c\r\n\td\r\n\r\nbody\nline\r\r\nend",
        b"From x\r\na: b\r\n\r\n",
        b" continues nothing\r\n",
        b"no colon\r\n\r\n",
        b"a: b\n\nbody with LF\n",
    ],
)
def test_named_messages(message: bytes) -> None:
    assert _outcome(dkim_linear.rfc822_parse, message) == _outcome(DKIMPY_PARSE, message)


def test_the_message_parse_holds_the_body_once() -> None:
    """dkimpy's parse split the body into a list of line objects (33 times the body for
    3-octet lines); dkimpy's DKIM object now parses with `rfc822_parse`: the body's bytes
    once, and a copy at most."""
    body = b"a\r\n" * (2 * 2**20 // 3)
    data = message(body=body.decode())
    tracemalloc.start()
    try:
        d = dkim.DKIM(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert d.body == body
    assert peak < 3 * len(body), peak


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
def test_named_bodies(body: bytes) -> None:
    assert dkim_linear.strip_trailing_whitespace(body) == DKIMPY_STRIP(body)


@pytest.mark.parametrize(
    "value",
    [
        b"v=1; b=abc+/=; d=x",
        b"v=1; b=\r\n ab\r\n cd==\r\n",
        b"v=1; b = ab c\r\n",
        b"v=1; b\r\n =ab; bh=cd",
        b"v=1;b=",
        b"v=1; b" + b"\r\n " * 50 + b"x",  # no "=": the b= tag is not there
        b"h=from : b" + b"\r\n " * 50 + b"; b=ab",
        b"v=1; b=A" + b"\r\n " * 50 + b"!",
    ],
)
def test_named_fields(value: bytes) -> None:
    assert dkim_linear.RE_BTAG.sub(b"\\1", value) == DKIMPY_BTAG.sub(b"\\1", value)


@pytest.mark.parametrize(
    "value",
    [b"", b"=", b" =", b"ab==", b"ab== ", b"ab=c", b"a b\r\n c", b"A" + b" " * 100 + b"!"],
)
def test_named_b_values(value: bytes) -> None:
    assert (bad_b_value(value) == "") == (re.match(DKIMPY_BASE64, value) is not None)


class _ReSpy:
    """dkim's `re`, noting each use of dkimpy's quadratic patterns on a value they refuse
    (where the backtracking happens)."""

    def __init__(self) -> None:
        self.refused: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(re, name)

    def match(self, pattern: Any, string: Any, flags: int = 0) -> Any:
        found = re.match(pattern, string, flags)
        if pattern == DKIMPY_BASE64 and found is None:
            self.refused.append(string)
        return found

    def sub(self, pattern: Any, repl: Any, string: Any, count: int = 0, flags: int = 0) -> Any:
        if pattern == b"[\t ]+\r\n":
            self.refused.append(pattern)
        return re.sub(pattern, repl, string, count=count, flags=flags)


def _signed(msg: bytes) -> bytes:
    return (
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


async def _verify(data: bytes) -> list[Any]:
    verifier = DkimVerifier(fake_resolver(ZoneNameserver.from_dnsmasq(zone.records()), timeout=10))
    try:
        return list(await verifier.verify(as_message(data)))
    finally:
        verifier.close()


async def test_a_relaxed_signature_over_blank_runs_passes_without_dkimpys_regexes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = _signed(message(body=((" " * 900 + "x\r\n") * 50 + "blanks \t \r\n") * 4))
    spy = _ReSpy()
    monkeypatch.setattr(dkim.canonicalization, "re", spy)
    monkeypatch.setattr(dkim, "re", spy)
    found = await _verify(signed)
    assert [r.result for r in found] == ["pass"], found
    assert spy.refused == []
    assert dkim.RE_BTAG is dkim_linear.RE_BTAG  # what verify_sig takes b= out with


async def test_a_b_value_of_blank_runs_is_refused_without_dkimpys_regex(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signed = _signed(message())
    # the b= value becomes a letter, 200 folded blank lines and a "!"
    head, sep, rest = signed.partition(b" b=")
    bad = head + sep + b"A" + b"\r\n " * 200 + b"!" + rest[rest.index(b"\r\n") :]
    spy = _ReSpy()
    monkeypatch.setattr(dkim, "re", spy)
    found = await _verify(bad)
    assert [r.result for r in found] == ["neutral"], found
    assert found[0].reason.startswith("b= value is not valid base64 (b'A\\r\\n "), found
    assert spy.refused == []
