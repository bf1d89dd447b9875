"""The trace of a message: its queue id and the Received: line mailmoat adds (RFC 5321 §4.4)."""

from __future__ import annotations

import functools
import re
import secrets
import time
from datetime import datetime
from email.utils import format_datetime
from ipaddress import IPv4Address, IPv6Address

from mailmoat.policy.base import Client
from mailmoat.smtp._abnf import HELO_AS_SENT
from mailmoat.smtp.connection import ServerConnection


def new_queue_id() -> str:
    return secrets.token_hex(6).upper()


_date: tuple[int, str] = (-1, "")


def trace_date() -> str:
    """The local time for a trace header (RFC 5322 date-time, to the second), formatted once
    a second: `format_datetime` costs more than the rest of the Received header."""
    global _date
    second = int(time.time())
    if _date[0] != second:
        _date = (second, format_datetime(datetime.fromtimestamp(second).astimezone()))
    return _date[1]


@functools.lru_cache(maxsize=1024)
def _trace_helo(helo: str | None) -> str:
    """The HELO name for the Received: line: as sent when it is a domain or an address
    literal, else `unknown (HELO ...)` with `(`, `)` and `\\` escaped, so a name such as `(`
    or `x;Mon,` cannot open a comment or end the clause (the engine already refuses anything
    but printable ASCII)."""
    if helo and HELO_AS_SENT.fullmatch(helo):
        return helo
    text = re.sub(r"([()\\])", r"\\\1", helo or "")
    return f"unknown (HELO {text})"


@functools.lru_cache(maxsize=1024)
def _address_literal(ip: IPv4Address | IPv6Address) -> str:
    """RFC 5321 §4.1.3 address literal, without the brackets (`str` of an address is slow)."""
    return f"IPv6:{ip}" if ip.version == 6 else str(ip)


def received_header(conn: ServerConnection, client: Client, queue_id: str) -> bytes:
    """RFC 5321 §4.4 trace line, with the protocol keyword of RFC 3848 / RFC 6531."""
    envelope = conn.envelope
    assert envelope is not None
    proto = ("UTF8SMTP" if envelope.smtputf8 else "ESMTP") if conn.esmtp else "SMTP"
    if conn.tls_active:
        proto += "S"
    literal = _address_literal(client.ip)
    rcpt = f"\r\n\tfor <{envelope.rcpt_to[0]}>" if len(envelope.rcpt_to) == 1 else ""
    text = (
        f"Received: from {_trace_helo(conn.helo)} ([{literal}])\r\n"
        f"\tby {conn.hostname} (mailmoat) with {proto} id {queue_id}{rcpt};\r\n"
        f"\t{trace_date()}\r\n"
    )
    return text.encode("utf-8")
