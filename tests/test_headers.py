"""The header scan: the same fields, byte ranges, counts and flags whatever the chunking."""

from __future__ import annotations

import email
import email.policy
import re

import dkim
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailmoat.headers import MAX_FIELD, MAX_KEPT, WANTED, HeaderField, Headers, scan

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
    return fields, h.counts, h.size, h.defect


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


def reference_defect(number: int, line: bytes) -> str:
    """What the scan says of a line that is not a field, worked out with regexes."""
    if re.match(rb"[ \t]", line):
        what = "starts with white space but continues no field"
    elif re.match(rb"From ", line):
        what = 'is an mbox "From " line'
    elif re.fullmatch(rb"[^:]*\r\n", line):
        what = "is not a header field (no colon)"
    elif re.match(rb":", line):
        what = "has an empty field name"
    else:
        what = "has a field name with characters RFC 5322 does not allow"
    return f"header line {number} {what}"


def reference_scan(data: bytes, wanted: tuple[str, ...]) -> Headers:
    """The header block read one line at a time with a regex (the scan before it cut blocks)."""
    want = {w.encode() for w in wanted}
    out = Headers()
    offset, in_field = 0, False
    current: tuple[str, int, bytearray] | None = None

    def finish(end: int) -> None:
        assert current is not None
        name, start, raw = current
        if end - start > MAX_FIELD and not out.defect:
            out.defect = f"a {name} header field longer than {MAX_FIELD} octets"
        out.counts[name] = out.counts.get(name, 0) + 1
        kept = out.fields.setdefault(name, [])
        if len(kept) < MAX_KEPT:
            kept.append(HeaderField(name, bytes(raw), start, end))

    for number, line in enumerate(data.split(b"\r\n")[:-1], 1):
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
                out.size = start
                out.defect = out.defect or reference_defect(number, line)
            return out
        in_field = True
        if line[len(m.group(1))] != 0x3A and not out.defect:
            out.defect = f"header line {number} has white space before the colon"
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
        b"From a@b.test Mon Jan  1 00:00:00 2024",
        b"From : spaced from",
        b"   ",
        b"A\x01B: control",
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


def test_a_field_longer_than_max_field_is_a_defect_across_chunks() -> None:
    """The checks read at most MAX_FIELD octets of a field: a longer one (a forged
    Authentication-Results whose authserv-id follows a 64 KiB comment, a From whose address
    follows a 64 KiB display name) would be judged by its cut, so the message is refused."""
    data = b"From: " + b"x" * MAX_FIELD + b"\r\n\tand more\r\nSubject: s\r\n\r\nbody\r\n"
    for size in (1000, 8192, len(data)):
        got = scan(chunked(data, size), ("from",))
        (f,) = got.get("from")
        assert (f.raw, f.start, f.end) == (data[:MAX_FIELD], 0, data.index(b"Subject"))
        assert got.defect == f"a from header field longer than {MAX_FIELD} octets"
        assert summary(got) == summary(reference_scan(data, ("from",)))
    exactly = b"From: " + b"y" * (MAX_FIELD - 8) + b"\r\nSubject: s\r\n\r\nbody\r\n"
    assert scan([exactly], ("from",)).defect == ""  # MAX_FIELD octets with its CRLF: fine


# --- the defined treatment of every header-block shape ----------------------------------------

TRACE = (
    b"Received: from client.test ([192.0.2.1])\r\n"
    b"\tby mx.mailmoat.test (mailmoat) with ESMTP id 0123456789AB;\r\n"
    b"\tThu, 03 Dec 2026 09:00:00 +0000\r\n"
)
"""What mailmoat puts in front of the client's content: the delivered header block starts here."""

FORGED = b"Authentication-Results: mx.mailmoat.test; dkim=pass header.d=bank.test\r\n"
EVIL_FROM = b"From: Bank <ceo@bank.test>\r\n"


@pytest.mark.parametrize(
    ("content", "defect"),
    [
        (b" x\r\n" + FORGED + EVIL_FROM + b"\r\nbody\r\n", "line 1 starts with white space"),
        (b"\tx\r\n" + FORGED + b"\r\n", "line 1 starts with white space"),
        (b"Subject: s\r\nno colon\r\n" + EVIL_FROM + b"\r\n", "line 2 is not a header field"),
        (b"Subject: s\r\n:x\r\n" + EVIL_FROM + b"\r\n", "line 2 has an empty field name"),
        (b"From a@b.test Mon Jan  1 00:00:00 2024\r\n" + EVIL_FROM, 'line 1 is an mbox "From "'),
        (b"Subject: s\r\nFrom x@y.test  Mon Jan  1\r\n" + EVIL_FROM, 'line 2 is an mbox "From "'),
        (b"Subject : s\r\n" + EVIL_FROM + b"\r\n", "line 1 has white space before the colon"),
        (b"Subject\t: s\r\n" + EVIL_FROM + b"\r\n", "line 1 has white space before the colon"),
        (b"Bad Name: s\r\n" + EVIL_FROM + b"\r\n", "line 1 has a field name with characters"),
        (b"Subj\xc3\xa9ct: s\r\n" + EVIL_FROM + b"\r\n", "line 1 has a field name with characters"),
        (b"Sub\x01ject: s\r\n" + EVIL_FROM + b"\r\n", "line 1 has a field name with characters"),
        (b"Sub\x7fject: s\r\n" + EVIL_FROM + b"\r\n", "line 1 has a field name with characters"),
        (b"Subject: s\r\nbody without the empty line\r\n", "line 2 is not a header field"),
        (b"a body and no header at all\r\n", "line 1 is not a header field"),
    ],
)
def test_a_line_that_is_not_a_field_is_a_defect(content: bytes, defect: str) -> None:
    """Every such line makes the block one that parsers read differently: the message is
    refused (server.session), so no check ever sees fields other than the downstream's."""
    for size in (1, 5, len(content)):
        got = scan(chunked(content, size), ("from", "authentication-results"))
        assert defect in got.defect and not got.strict


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"\r\n",
        b"\r\n from the body\r\n",
        b"Subject: s\r\n" + EVIL_FROM,  # no empty line: all of it is the header block
        b"Subject: s\r\n  \r\n" + EVIL_FROM + b"\r\nbody\r\n",  # obs-FWS: a blank continuation
        b"X-Long: a\r\n" + b" " + b"b" * 997 + b"\r\n" + EVIL_FROM + b"\r\n",
        b"Subject: \xc3\xa9t\xc3\xa9 8-bit value\r\n" + EVIL_FROM + b"\r\nno colon\r\n",
    ],
)
def test_well_formed_blocks_have_no_defect(content: bytes) -> None:
    assert scan(chunked(content, 7), ("from",)).defect == ""


def python_fields(content: bytes, policy: email.policy.Policy) -> list[str]:
    """The names of the fields Python's parser reads from the delivered message after ours."""
    parsed = email.message_from_bytes(TRACE + content, policy=policy)
    return [name.lower() for name in parsed][1:]


def block_fields(content: bytes, size: int) -> list[str]:
    """The names of the fields of a block without defect (`size` octets), in order."""
    lines = content[:size].split(b"\r\n")
    return [line.split(b":", 1)[0].lower().decode() for line in lines if line[:1] not in b" \t"]


GOOD_FIELDS = st.sampled_from([x for x in LINES.elements if re.match(rb"[!-9;-~]+:", x)])
GOOD_BLOCKS = st.builds(
    lambda first, rest: [first, *rest],
    GOOD_FIELDS,
    st.lists(st.one_of(GOOD_FIELDS, st.sampled_from([b"\tcontinued", b" more", b"   "]))),
)
"""Header blocks without defect: a field, then fields and continuations."""


@settings(max_examples=400, deadline=None)
@given(
    st.one_of(st.just([]), GOOD_BLOCKS),
    st.one_of(
        st.sampled_from([b"", b"\r\nbody\r\n", b"\r\nFrom: x@body.test\r\n"]),
        st.lists(LINES, max_size=6).map(lambda body: b"\r\n" + b"\r\n".join(body)),
    ),
)
def test_a_block_without_defect_is_what_python_email_reads(lines: list[bytes], body: bytes) -> None:
    """Python's `email` (compat32 and default), given the message as delivered (our trace in
    front), reads exactly the fields of a block the scan finds no defect in: none more (a
    field that escaped the scan) and none fewer. So does dkimpy, which DKIM verification
    gives the client's content."""
    content = b"".join(line + b"\r\n" for line in lines) + body
    got = scan([content], WANTED)
    assert not got.defect
    expected = block_fields(content, got.size)
    for policy in (email.policy.compat32, email.policy.default):
        assert python_fields(content, policy) == expected
    assert [n.decode().lower() for n, _ in dkim.rfc822_parse(content)[0]] == expected
    assert [f.name for k in WANTED for f in got.get(k)] == [
        n for k in WANTED for n in expected if n == k
    ]


@pytest.mark.parametrize(
    "content",
    [
        b" x\r\n" + FORGED + EVIL_FROM + b"\r\n",  # continues our Received: field
        b"Subject: s\r\n:x\r\n" + FORGED + EVIL_FROM + b"\r\n",  # Python reads on past ":x"
        b"Subject: s\r\nFrom x@y.test Mon Jan  1\r\n" + FORGED + EVIL_FROM + b"\r\n",
    ],
)
def test_python_email_reads_fields_past_a_defect(content: bytes) -> None:
    """Why these shapes are refused and not read "up to the bad line": a downstream parser
    reads the forged fields after it as header fields."""
    got = scan([content], WANTED)
    assert got.defect and got.get("authentication-results") == []
    for policy in (email.policy.compat32, email.policy.default):
        fields = python_fields(content, policy)
        assert "authentication-results" in fields and "from" in fields


# --- the size limit ----------------------------------------------------------------------------


def fields_length(data: bytes, h: Headers) -> int:
    """Octets of the fields of the block `h` scanned (the empty line after them not counted)."""
    block = data[: h.size]
    return h.size - 2 if block.endswith(b"\r\n\r\n") or block == b"\r\n" else h.size


@settings(max_examples=300, deadline=None)
@given(st.lists(LINES, max_size=12), st.integers(1, 80), st.integers(0, 400))
def test_the_limit_stops_the_scan_only_past_it(lines: list[bytes], size: int, limit: int) -> None:
    data = b"".join(line + b"\r\n" for line in lines) + b"\r\nbody\r\n"
    want = ("from", "authentication-results", "dkim-signature")
    whole = scan([data], want)
    for got in (scan(chunked(data, size), want, limit), scan([data], want, limit)):
        assert got.too_big is (fields_length(data, whole) > limit)
        if got.too_big:
            assert got.defect == f"header block larger than {limit} octets"
            kept = sum(len(f.raw) for fields in got.fields.values() for f in fields)
            assert kept <= limit + max(size, len(data))
        else:
            assert summary(got) == summary(whole)


def test_a_huge_header_block_keeps_no_more_than_the_limit() -> None:
    """A message of 25 MiB of From fields: without a limit the scan would keep MAX_KEPT fields
    of MAX_FIELD octets; with one it stops a chunk past it."""
    field = b"From: " + b"a" * 900 + b"\r\n" + b" " + b"b" * 900 + b"\r\n"
    data = field * 2000 + b"\r\nbody\r\n"
    got = scan(chunked(data, 8192), ("from",), 64 * 1024)
    assert got.too_big and 64 * 1024 < got.size <= 64 * 1024 + 8192
    assert sum(len(f.raw) for f in got.get("from")) <= got.size
    assert scan(chunked(data, 8192), ("from",)).counts["from"] == 2000


@pytest.mark.parametrize("size", [64, 8192])
def test_more_fields_of_a_wanted_name_than_are_kept_is_a_defect(size: int) -> None:
    kept = b"From: a@x.test\r\n" * MAX_KEPT + b"\r\nbody\r\n"
    assert scan(chunked(kept, size), ("from",)).defect == ""
    more = b"Subject: s\r\n" + b"From: a@x.test\r\n" * (MAX_KEPT + 1) + b"\r\nbody\r\n"
    got = scan(chunked(more, size), ("from",))
    assert got.defect == f"more than {MAX_KEPT} from header fields"
    assert got.counts["from"] == MAX_KEPT + 1 and len(got.get("from")) == MAX_KEPT
    assert scan(chunked(more, size), ()).defect == ""  # only the fields a check reads count
