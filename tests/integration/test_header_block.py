"""The header block mailmoat inspects is the one a real Postfix behind it parses.

mailmoat puts its own trace fields in front of the client's content, so a first line that
starts with white space would continue mailmoat's Received: field, and the fields after it
would reach Postfix as header fields that no check saw (issue 10 item 2). Every line of the
client's header block must be a field or the continuation of one; any other shape is refused
with 554 5.6.0 (tests/test_headers.py holds the shapes and Python's `email` parser). Here: the
refusals, a control that shows what Postfix would have stored, and, for every shape that is
accepted, the fields Postfix stores are mailmoat's trace plus exactly the fields it scanned.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mailmoat.headers import scan
from tests.support.gateway import running_gateway
from tests.support.postfix import PostfixInstance
from tests.support.raw_client import RawClient

pytestmark = pytest.mark.peers

FORGED = b"Authentication-Results: mx.mailmoat.test; dkim=pass header.d=bank.test\r\n"
EVIL_FROM = b"From: Bank <ceo@bank.test>\r\n"
STAND_IN = (
    b"Received: from client.sender.test ([127.0.0.1])\r\n\tby mx.mailmoat.test (mailmoat)\r\n"
)
"""In front of the content sent to Postfix directly, where mailmoat's trace would be."""

REFUSED = {
    "leading-space": b" continued\r\n" + FORGED + EVIL_FROM + b"\r\nbody\r\n",
    "leading-tab": b"\tcontinued\r\n" + FORGED + EVIL_FROM + b"\r\nbody\r\n",
    "no-colon": b"Subject: s\r\nno colon here\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "empty-name": b"Subject: s\r\n:x\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "mbox-first": b"From ceo@bank.test Mon Jan  1 00:00:00 2024\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "mbox-later": b"Subject: s\r\nFrom ceo@bank.test Mon Jan  1 00:00:00 2024\r\n" + EVIL_FROM,
    "space-before-colon": b"Subject : s\r\n" + FORGED + EVIL_FROM + b"\r\nbody\r\n",
    "space-in-name": b"Bad Name: s\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "8bit-name": b"Subj\xc3\xa9ct: s\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "control-in-name": b"Sub\x01ject: s\r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "no-empty-line": b"Subject: s\r\nbody text\r\n" + EVIL_FROM,
    "no-header": b"a body and no header at all\r\n",
}

ACCEPTED = {
    "plain": b"Subject: s\r\n" + EVIL_FROM + b"To: alice@example.test\r\n\r\nbody\r\n",
    "headers-only": b"Subject: s\r\n" + EVIL_FROM,
    "empty": b"",
    "empty-header": b"\r\n" + EVIL_FROM + b"body\r\n",
    "blank-continuation": b"Subject: s\r\n  \r\n" + EVIL_FROM + b"\r\nbody\r\n",
    "8bit-value": b"Subject: \xc3\xa9t\xc3\xa9\r\n" + EVIL_FROM + b"\r\nno colon in the body\r\n",
    # folded past Postfix's header_size_limit (102400): Postfix drops the rest of the field,
    # and the From after it is a field for Postfix as for mailmoat
    "huge-field": b"X-Long: a\r\n" + (b" " + b"c" * 900 + b"\r\n") * 130 + EVIL_FROM + b"\r\n",
}

USERS = tuple(f"u{i}" for i in range(len(REFUSED) + len(ACCEPTED) + 1))


def _send(port: int, rcpt: str, content: bytes) -> tuple[int, str]:
    """One transaction with exactly `content` (no line starts with a dot); (code, text)."""
    with RawClient(port) as c:
        c.expect(220)
        c.command(b"EHLO client.sender.test\r\n")
        assert c.command(b"MAIL FROM:<s@sender.test>\r\n").code == 250
        assert c.command(b"RCPT TO:<" + rcpt.encode() + b">\r\n").code == 250
        assert c.command(b"DATA\r\n").code == 354
        r = c.command(content + b".\r\n")
        c.command(b"QUIT\r\n")
    return r.code, r.text


def stored_fields(raw: bytes) -> list[tuple[str, bytes]]:
    """(name, value with its folding) of every header field of a message as Postfix stored
    it (LF line ends), read as Postfix does: up to the first empty line, a line that starts
    with white space continuing the field before it."""
    fields: list[tuple[str, bytes]] = []
    for line in raw.split(b"\n\n", 1)[0].split(b"\n"):
        if not line:  # the end of a message that is all header
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] = (fields[-1][0], fields[-1][1] + b"\n" + line)
        else:
            name, _, value = line.partition(b":")
            fields.append((name.decode("utf-8", "replace").lower(), value))
    return fields


def scanned_fields(content: bytes) -> list[str]:
    """The names of the fields of the client's header block, as mailmoat's scan bounds it."""
    size = scan([content], ()).size
    lines = content[:size].split(b"\r\n")
    return [line.split(b":", 1)[0].decode().lower() for line in lines if line[:1] not in b" \t"]


@pytest.fixture
def downstream(postfix_instance) -> PostfixInstance:
    return postfix_instance.downstream(users=USERS)


def test_malformed_header_blocks_are_refused_and_never_reach_postfix(
    tmp_path: Path, downstream: PostfixInstance
) -> None:
    pf = downstream
    with running_gateway(tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{pf.port}"}) as gw:
        for name, content in REFUSED.items():
            code, text = _send(gw.port, "u0@example.test", content)
            assert code == 554 and text.startswith("5.6.0 Message rejected: header line"), name
        # the sessions are over: one good message after them, and it is the only one stored
        assert _send(gw.port, "u0@example.test", ACCEPTED["plain"])[0] == 250
    (only,) = pf.wait_for_messages("u0")
    assert only.content_crlf.endswith(ACCEPTED["plain"])


def test_the_control_what_postfix_would_have_stored(downstream: PostfixInstance) -> None:
    """Sent to Postfix directly after a stand-in for mailmoat's trace: Postfix stores the forged
    fields after a leading continuation (or after `Subject : s`) as header fields."""
    pf = downstream
    for i, name in enumerate(("leading-space", "leading-tab", "space-before-colon"), 1):
        assert _send(pf.port, f"u{i}@example.test", STAND_IN + REFUSED[name])[0] == 250
        (msg,) = pf.wait_for_messages(f"u{i}")
        names = [n for n, _ in stored_fields(msg.content)]
        assert "authentication-results" in names and "from" in names, name


def test_postfix_stores_exactly_the_fields_mailmoat_scanned(
    tmp_path: Path, downstream: PostfixInstance
) -> None:
    pf = downstream
    users = USERS[1 : len(ACCEPTED) + 1]
    with running_gateway(tmp_path / "md", **{"relay.downstream": f"127.0.0.1:{pf.port}"}) as gw:
        for user, (name, content) in zip(users, ACCEPTED.items(), strict=True):
            assert _send(gw.port, f"{user}@example.test", content)[0] == 250, name
    for user, (name, content) in zip(users, ACCEPTED.items(), strict=True):
        (msg,) = pf.wait_for_messages(user)
        stored = stored_fields(msg.content)
        assert [n for n, _ in stored] == ["received", *scanned_fields(content)], name
        froms = [v.strip() for n, v in stored if n == "from"]
        assert froms == ([] if name in ("empty", "empty-header") else [b"Bank <ceo@bank.test>"])
