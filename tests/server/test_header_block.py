"""The session's own treatment of the client's header block at the end of DATA, before any
check and whatever checks run: a block that parsers read differently gets 554 5.6.0, one
longer than smtp.max_header_size gets 552 5.3.4 (tests/integration/test_header_block.py has
the shapes against a real Postfix)."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest

from tests.support.gateway import running_gateway
from tests.support.host import wait_until

MESSAGE = b"From: Bank <ceo@bank.test>\r\nSubject: s\r\n\r\nbody\r\n"


def _stored(md: Path) -> list[bytes]:
    new = md / "new"
    return [p.read_bytes() for p in sorted(new.iterdir())] if new.is_dir() else []


def _refusal(port: int, content: bytes) -> tuple[int, bytes]:
    """Send `content` (refused), then MESSAGE in the same session (taken)."""
    with smtplib.SMTP("127.0.0.1", port) as c:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail("s@sender.test", ["alice@example.test"], content)
        assert c.sendmail("s@sender.test", ["alice@example.test"], MESSAGE) == {}
    return refused.value.smtp_code, refused.value.smtp_error


@pytest.mark.parametrize("spool_memory", [256 * 1024, 0])  # 0: the header scan reads a file
def test_a_malformed_header_block_is_refused_without_the_dns_checks(
    tmp_path: Path, spool_memory: int
) -> None:
    md = tmp_path / "md"
    with running_gateway(md, **{"server.spool_memory": spool_memory}) as gw:
        code, text = _refusal(gw.port, b" continued\r\n" + MESSAGE)
    assert code == 554
    assert text.startswith(b"5.6.0 Message rejected: header line 1 starts with white space")
    assert len(wait_until(lambda: _stored(md), 5, "the message in the Maildir")) == 1


@pytest.mark.parametrize("spool_memory", [256 * 1024, 0])
def test_a_header_block_longer_than_max_header_size_is_refused(
    tmp_path: Path, spool_memory: int
) -> None:
    md = tmp_path / "md"
    limit = 4096
    field = b"X-Pad: " + b"p" * 90 + b"\r\n"  # 99 octets
    fits = field * (limit // len(field)) + MESSAGE  # MESSAGE's own fields push it over
    own = MESSAGE.index(b"\r\n\r\n") + 2  # MESSAGE's fields
    pads = (limit - own) // len(field) - 1
    last = limit - own - pads * len(field) - len(b"X-Last: \r\n")
    exact = field * pads + b"X-Last: " + b"q" * last + b"\r\n" + MESSAGE
    assert exact.index(b"\r\n\r\n") + 2 == limit  # fields of exactly `limit` octets
    settings = {"server.spool_memory": spool_memory, "smtp.max_header_size": limit}
    with running_gateway(md, **settings) as gw:
        code, text = _refusal(gw.port, fits)
        with smtplib.SMTP("127.0.0.1", gw.port) as c:
            assert c.sendmail("s@sender.test", ["alice@example.test"], exact) == {}
    assert (code, text) == (552, b"5.3.4 Message rejected: header block larger than 4096 octets")
    assert len(wait_until(lambda: _stored(md), 5, "the messages in the Maildir")) == 2
