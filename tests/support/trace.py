"""mailmoat's own trace header in a message as the downstream got it (the test gateway's
server.hostname is mx.mailmoat.test)."""

from __future__ import annotations

import re

_MAILMOAT_RECEIVED = re.compile(
    rb"\AReceived: from [^\r\n]*\r?\n\tby mx\.mailmoat\.test \(mailmoat\) with (?P<proto>\w+) "
    rb"id (?P<qid>[0-9A-F]+)[^\r\n]*\r?\n(?:\t[^\r\n]*\r?\n)*"
)


def split_mailmoat_received(content: bytes) -> tuple[bytes, bytes]:
    """(mailmoat's Received: header, the rest) of a message as the downstream got it.

    Fails the test if the content does not start with exactly one header written by the test
    gateway (server.hostname mx.mailmoat.test). Works with CRLF and with LF line ends.
    """
    m = _MAILMOAT_RECEIVED.match(content)
    assert m is not None, f"no mailmoat Received: header at the top of {content[:300]!r}"
    return m.group(), content[m.end() :]


def mailmoat_queue_id(content: bytes) -> str:
    m = _MAILMOAT_RECEIVED.match(content)
    assert m is not None, content[:300]
    return m.group("qid").decode()
