"""The header scan: the same fields, byte ranges, counts and flags whatever the chunking."""

from __future__ import annotations

import pytest

from mailmoat.headers import Headers, scan

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
