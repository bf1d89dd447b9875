"""The header scan: the same fields, byte ranges, counts and flags whatever the chunking."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.headers import MAX_FIELD, MAX_KEPT, HeaderField, Headers, scan

HEAD = (
    b"From: A <a@sender.test>\r\n"
    b"Authentication-Results: mx.test;\r\n\tspf=pass\r\n"
    b"Subject: x\r\n"
    b"From: b@other.test\r\n"
    b"\r\n"
    b"From: not a header, the body\r\n"
)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def summary(h: Headers) -> tuple[object, ...]:
    fields = {k: [(f.raw, f.start, f.end) for f in v] for k, v in h.fields.items()}
    return fields, h.counts, h.size, h.strict


@pytest.mark.parametrize("size", [1, 2, 7, 25, 64 * 1024])
def test_chunking_does_not_matter(size: int) -> None:
    want = ("from", "authentication-results")
    got = scan(chunked(HEAD, size), want)
    assert summary(got) == summary(scan([HEAD], want))
    assert [f.value for f in got.get("from")] == ["A <a@sender.test>", "b@other.test"]
    ar = got.get("authentication-results")[0]
    assert HEAD[ar.start : ar.end] == b"Authentication-Results: mx.test;\r\n\tspf=pass\r\n"
    assert got.size == HEAD.index(b"\r\n\r\n") + 4 and got.strict


@pytest.mark.parametrize(
    ("head", "strict"),
    [
        (b"A: 1\r\nB: 2\r\n", True),  # no body, no empty line
        (b"A : 1\r\n\r\n", False),  # space before the colon
        (b"A: 1\r\nbody text\r\n", False),  # no empty line before the body
        (b" A: 1\r\n\r\n", False),  # starts with a continuation
    ],
)
def test_strict_header_blocks(head: bytes, strict: bool) -> None:
    assert scan(chunked(head, 3), ()).strict is strict


# --- the same as a plain line-by-line scan -----------------------------------------------------

_REF_NAME = re.compile(rb"^([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def reference_scan(data: bytes, wanted: tuple[str, ...]) -> Headers:
    """The header block read one line at a time with a regex (the scan before it cut blocks)."""
    want = {w.encode() for w in wanted}
    out = Headers()
    offset, in_field = 0, False
    current: tuple[str, int, bytearray] | None = None

    def finish(end: int) -> None:
        assert current is not None
        name, start, raw = current
        out.counts[name] = out.counts.get(name, 0) + 1
        kept = out.fields.setdefault(name, [])
        if len(kept) < MAX_KEPT:
            kept.append(HeaderField(name, bytes(raw), start, end))

    for line in data.split(b"\r\n")[:-1]:
        line += b"\r\n"
        start = offset
        offset += len(line)
        if in_field and line[0] in (0x20, 0x09):
            if current is not None:
                current[2].extend(line[: MAX_FIELD - len(current[2])])
            continue
        if current is not None:
            finish(start)
            current = None
        m = _REF_NAME.match(line)
        if m is None:
            if line == b"\r\n":
                out.size = offset
            else:
                out.size, out.strict = start, False
            return out
        in_field = True
        if line[len(m.group(1))] != 0x3A:
            out.strict = False
        name = m.group(1).lower()
        if name in want:
            current = (name.decode(), start, bytearray(line[:MAX_FIELD]))
    if current is not None:
        finish(offset)
    out.size = offset
    return out


LINES = st.sampled_from(
    [
        b"From: a@b.test",
        b"from:x",
        b"FROM : spaced",
        b"Authentication-Results: mx.test; spf=pass",
        b"DKIM-Signature: v=1; d=b.test",
        b"Subject: hi",
        b"X-Long: " + b"y" * 300,
        b"\tcontinued",
        b" more",
        b"",
        b"body text",
        b" leading",
        b"Bad Name: x",
        b"A\t: tab",
        b"\xc3\xa9: eight bit",
        b":no name",
        b"Colon-less",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=12), st.integers(1, 80), st.binary(max_size=3))
def test_same_as_a_line_by_line_scan(lines: list[bytes], size: int, tail: bytes) -> None:
    data = b"".join(line + b"\r\n" for line in lines) + tail.replace(b"\n", b"")
    want = ("from", "authentication-results", "dkim-signature")
    expected = reference_scan(data[: data.rfind(b"\r\n") + 2] if b"\r\n" in data else b"", want)
    assert summary(scan(chunked(data, size), want)) == summary(expected)
    assert summary(scan([data], want)) == summary(expected)


def test_a_long_field_is_kept_up_to_max_field_across_chunks() -> None:
    data = b"From: " + b"x" * MAX_FIELD + b"\r\n\tand more\r\nSubject: s\r\n\r\nbody\r\n"
    for size in (1000, 8192, len(data)):
        got = scan(chunked(data, size), ("from",))
        (f,) = got.get("from")
        assert (f.raw, f.start, f.end) == (data[:MAX_FIELD], 0, data.index(b"Subject"))
        assert summary(got) == summary(reference_scan(data, ("from",)))
