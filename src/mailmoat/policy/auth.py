"""The Authentication-Results header (RFC 8601) and the removal of forged ones.

At the end of DATA, after the SPF, DKIM and DMARC checks, mailmoat puts in front of the message
(with its Received: line) one header field

    Authentication-Results: <authserv-id>;
        iprev=pass policy.iprev=192.0.2.1 (mail.example.org);
        spf=pass smtp.mailfrom=example.org;
        spf=pass smtp.helo=mail.example.org;
        dkim=pass header.d=example.org header.s=sel header.b=AbCdEfGh;
        dmarc=pass (p=reject dis=none) header.from=example.org

and leaves out every Authentication-Results field of the client's header block that claims our
authserv-id (RFC 8601 5: a receiver must not trust, and should remove, results it did not make).
They are cut by byte range from what is delivered (Message.omit); every other byte goes out as
the client sent it, so DKIM signatures still verify downstream. A message with more such fields
than can be tracked (`headers.MAX_KEPT`) is refused rather than passed with some left in.
"""

from __future__ import annotations

import re
from typing import Any

from mailmoat import logs
from mailmoat.config import AuthSettings
from mailmoat.headers import MAX_KEPT, Headers
from mailmoat.message import Message
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.fcrdns import Iprev
from mailmoat.policy.score import PENDING, Karma, SessionState, headers_now, message_headers
from mailmoat.policy.spf import SpfResults
from mailmoat.smtp.replies import reply

AR = "authentication-results"

R_TOO_MANY = reply(550, "5.7.1", "Message refused: too many Authentication-Results header fields")

_TOKEN = re.compile(r"^[A-Za-z0-9._\-]+$")
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


def authserv_id(value: str) -> str:
    """The authserv-id at the start of an Authentication-Results value (after any CFWS)."""
    i, depth = 0, 0
    while i < len(value):
        c = value[i]
        if c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif c == "\\" and depth:
            i += 1
        elif not depth and not c.isspace():
            break
        i += 1
    rest = value[i:]
    if rest.startswith('"'):
        end = rest.find('"', 1)
        return rest[1 : end if end > 0 else None].lower()
    return re.split(r"[\s;(]", rest, maxsplit=1)[0].lower()


def _prop(name: str, value: str) -> str:
    return f" {name}={value}" if value and _TOKEN.match(value) else ""


def _ready(st: SessionState, key: str) -> Any:
    """A finished result (None while it runs, or when it failed)."""
    value = st.ready(key)
    return None if value is PENDING else value


def results_header(server_id: str, st: SessionState, message: Message) -> bytes:
    entries: list[str] = []
    iprev: Iprev | None = st.iprev
    if iprev is None:
        iprev = _ready(st, "fcrdns")
    if iprev is not None:
        comment = f" ({iprev.name})" if iprev.name and _TOKEN.match(iprev.name) else ""
        entries.append(f"iprev={iprev.result} policy.iprev={st.ip_text}{comment}")
    spf: SpfResults | None = _ready(st, "tx:spf")
    if spf is not None:
        if message.envelope.mail_from:
            entries.append(
                f"spf={spf.mailfrom.result}" + _prop("smtp.mailfrom", spf.mailfrom.domain)
            )
        helo = spf.helo or (spf.mailfrom if spf.mailfrom.identity == "helo" else None)
        if helo is not None:
            entries.append(f"spf={helo.result}" + _prop("smtp.helo", helo.domain))
    dkim = st.dkim
    if dkim is not None:
        if not dkim:
            entries.append("dkim=none")
        for r in dkim:
            # "/", "+" and "=" are not token characters (RFC 2045): quote such a value
            b = "" if not r.b or not _B64.match(r.b) else _prop("header.b", r.b)
            if r.b and not b and _B64.match(r.b):
                b = f' header.b="{r.b}"'
            entries.append(
                f"dkim={r.result}" + _prop("header.d", r.domain) + _prop("header.s", r.selector) + b
            )
    dmarc = st.dmarc
    if dmarc is not None:
        comment = f" (p={dmarc.policy} dis={dmarc.disposition})" if dmarc.result != "none" else ""
        entries.append(f"dmarc={dmarc.result}{comment}" + _prop("header.from", dmarc.domain))
    body = ";\r\n\t".join(entries) if entries else "none"
    return f"Authentication-Results: {server_id};\r\n\t{body}\r\n".encode("ascii", "replace")


class AuthResultsCheck(Check):
    name = "auth_results"

    def __init__(self, settings: AuthSettings, hostname: str, karma: Karma) -> None:
        self.s = settings
        self.server_id = (settings.authserv_id or hostname).strip()
        self.karma = karma

    def message(self, client: Client, message: Message) -> HookResult:
        st = self.karma.state(client)
        headers = headers_now(st, message)
        return self._later(st, message) if headers is None else self._edit(st, message, headers)

    async def _later(self, st: SessionState, message: Message) -> Verdict:
        return self._edit(st, message, await message_headers(st, message))

    def _edit(self, st: SessionState, message: Message, headers: Headers) -> Verdict:
        ours = self.server_id.lower()
        fields = headers.get(AR)
        if headers.counts.get(AR, 0) > MAX_KEPT:
            return R_TOO_MANY
        forged = [f for f in fields if authserv_id(f.value) == ours]
        if forged:
            ranges: list[tuple[int, int]] = []
            for f in forged:
                if ranges and ranges[-1][1] == f.start:
                    ranges[-1] = (ranges[-1][0], f.end)
                else:
                    ranges.append((f.start, f.end))
            message.omit = sorted([*message.omit, *ranges])
            logs.event(
                "auth",
                client=st.client.address,
                queue_id=message.queue_id,
                removed=f"{len(forged)} forged Authentication-Results",
            )
        if self.s.results_header and not st.exempt:
            message.trace = results_header(self.server_id, st, message) + message.trace
        return None
