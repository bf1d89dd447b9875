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
authserv-id (RFC 8601 5: a receiver must not trust, and should remove, results it did not make),
whether or not the DNS checks run (`ForgedResultsCheck`, in every gateway's checks).
They are cut by byte range from what is delivered (Message.omit); every other byte goes out as
the client sent it, so DKIM signatures still verify downstream. A message with more such fields
than can be tracked (`headers.MAX_KEPT`) is refused rather than passed with some left in.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TypeVar

from mailmoat import logs
from mailmoat.config import AuthSettings
from mailmoat.headers import Headers
from mailmoat.limits import AUTH_RESULTS_CACHE as HEADER_CACHE
from mailmoat.limits import DMARC_CACHED_LENGTH as CACHED_LENGTH
from mailmoat.limits import HEADER_MAX_KEPT as MAX_KEPT
from mailmoat.message import Message
from mailmoat.policy.base import Check, Client, HookResult, Slot, Verdict
from mailmoat.policy.results import DKIM, DMARC, IPREV, SPF, Iprev, SpfResults
from mailmoat.policy.score import PENDING, Karma, SessionState
from mailmoat.smtp.replies import reply

T = TypeVar("T")

AR = "authentication-results"

R_TOO_MANY = reply(550, "5.7.1", "Message refused: too many Authentication-Results header fields")

_TOKEN = re.compile(r"^[A-Za-z0-9._\-]+$")
_B64 = re.compile(r"^[A-Za-z0-9+/=]+$")


_IDNA_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
"""The dots IDNA (RFC 3490 3.1) takes as label separators, after NFKC (which leaves U+3002)."""

_TSPECIALS = re.compile(r'[\s()<>@,;:\\"/\[\]?=]')
"""What ends a token (RFC 2045 tspecials, space and controls)."""


def authserv_id(value: str) -> str:
    """The authserv-id at the start of an Authentication-Results value (after any CFWS), as a
    consumer would compare it: a quoted-string unquoted (its quoted-pairs undone), a token
    cut at the first tspecial, lower case, a final dot dropped."""
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
        out, j = [], 1
        while j < len(rest) and rest[j] != '"':
            if rest[j] == "\\" and j + 1 < len(rest):
                j += 1
            out.append(rest[j])
            j += 1
        found = "".join(out)
    else:
        found = _TSPECIALS.split(rest, maxsplit=1)[0]
    return found.strip().lower().rstrip(".")


def forged_id(value: str, ours: str) -> bool:
    """Whether an Authentication-Results value claims to be ours (`ours`: lower case): its
    authserv-id in any spelling a consumer could take for ours, or (an encoded word, or junk
    a lenient parser reads past) our id anywhere before the first ";". A non-ASCII value is
    compared after NFKC with the IDNA dots made "." (full-width letters, U+3002 for a dot),
    the look-alikes a Unicode-aware consumer reads as ours (as `routing_local_part` does)."""
    if not value.isascii():
        value = unicodedata.normalize("NFKC", value).translate(_IDNA_DOTS)
    if authserv_id(value) == ours:
        return True
    head = value.split(";", 1)[0].lower().replace("\\", "")
    return ours in head


def _prop(name: str, value: str) -> str:
    return f" {name}={value}" if value and _TOKEN.match(value) else ""


def _ready(st: SessionState, slot: Slot[T]) -> T | None:
    """A finished result (None while it runs, or when it failed)."""
    value = st.ready(slot)
    return None if value is PENDING else value


_Pair = tuple[str, str] | None
"""(result, domain) of one SPF identity."""


def results_header(server_id: str, st: SessionState, message: Message) -> bytes:
    iprev: Iprev | None = _ready(st, IPREV)
    spf: SpfResults | None = _ready(st, SPF)
    mailfrom: _Pair = None
    helo: _Pair = None
    if spf is not None:
        if message.envelope.mail_from:
            mailfrom = spf.mailfrom.result, spf.mailfrom.domain
        identity = spf.helo or (spf.mailfrom if spf.mailfrom.identity == "helo" else None)
        if identity is not None:
            helo = identity.result, identity.domain
    dkim, dmarc = _ready(st, DKIM), _ready(st, DMARC)
    # what the message names (DKIM d= and s=, the From domain) is kept only when short
    size = sum(len(r.domain) + len(r.selector) for r in dkim or ())
    size += len(dmarc.domain) if dmarc is not None else 0
    render = _render if size <= CACHED_LENGTH else _render.__wrapped__
    return render(
        server_id,
        None if iprev is None else (iprev.result, st.ip_text, iprev.name),
        mailfrom,
        helo,
        None if dkim is None else tuple((r.result, r.domain, r.selector, r.b) for r in dkim),
        None if dmarc is None else (dmarc.result, dmarc.policy, dmarc.disposition, dmarc.domain),
    )


@lru_cache(maxsize=HEADER_CACHE)
def _render(
    server_id: str,
    iprev: tuple[str, str, str] | None,
    mailfrom: _Pair,
    helo: _Pair,
    dkim: tuple[tuple[str, str, str, str], ...] | None,
    dmarc: tuple[str, str, str, str] | None,
) -> bytes:
    entries: list[str] = []
    if iprev is not None:
        result, ip_text, name = iprev
        comment = f" ({name})" if name and _TOKEN.match(name) else ""
        entries.append(f"iprev={result} policy.iprev={ip_text}{comment}")
    if mailfrom is not None:
        entries.append(f"spf={mailfrom[0]}" + _prop("smtp.mailfrom", mailfrom[1]))
    if helo is not None:
        entries.append(f"spf={helo[0]}" + _prop("smtp.helo", helo[1]))
    if dkim is not None:
        if not dkim:
            entries.append("dkim=none")
        for result, domain, selector, sig in dkim:
            # "/", "+" and "=" are not token characters (RFC 2045): quote such a value
            b = "" if not sig or not _B64.match(sig) else _prop("header.b", sig)
            if sig and not b and _B64.match(sig):
                b = f' header.b="{sig}"'
            entries.append(
                f"dkim={result}" + _prop("header.d", domain) + _prop("header.s", selector) + b
            )
    if dmarc is not None:
        result, policy, disposition, domain = dmarc
        comment = f" (p={policy} dis={disposition})" if result != "none" else ""
        entries.append(f"dmarc={result}{comment}" + _prop("header.from", domain))
    body = ";\r\n\t".join(entries) if entries else "none"
    return f"Authentication-Results: {server_id};\r\n\t{body}\r\n".encode("ascii", "replace")


class ForgedResultsCheck(Check):
    """Leaves out of the delivered message every Authentication-Results field of the client's
    header block that carries our authserv-id. It runs for every message, whatever
    `dns.checks` and `auth.results_header` say: a forged result is as dangerous when mailmoat
    adds none of its own (the internal server, or a filter behind it, trusts our id)."""

    name = "forged_results"

    def __init__(self, settings: AuthSettings, hostname: str) -> None:
        self.ours = (settings.authserv_id or hostname).strip().lower().rstrip(".")

    def message(self, client: Client, message: Message) -> HookResult:
        headers = message.headers_now()
        if headers is None:
            return self._later(client, message)
        return self._remove(client, message, headers)

    async def _later(self, client: Client, message: Message) -> Verdict:
        return self._remove(client, message, await message.read_headers())

    def _remove(self, client: Client, message: Message, headers: Headers) -> Verdict:
        fields = headers.get(AR)
        if not fields:
            return None
        if headers.counts.get(AR, 0) > MAX_KEPT:
            return R_TOO_MANY
        forged = [f for f in fields if forged_id(f.value, self.ours)]
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
                client=client.address,
                queue_id=message.queue_id,
                removed=f"{len(forged)} forged Authentication-Results",
            )
        return None


class AuthResultsCheck(Check):
    """Puts our Authentication-Results field in front of the message (a DNS check: it reports
    their results)."""

    name = "auth_results"
    reads = (IPREV, SPF, DKIM, DMARC)

    def __init__(self, settings: AuthSettings, hostname: str, karma: Karma) -> None:
        self.s = settings
        self.server_id = (settings.authserv_id or hostname).strip()
        self.karma = karma

    def message(self, client: Client, message: Message) -> HookResult:
        st = self.karma.state(client)
        if self.s.results_header and not st.exempt:
            message.trace = results_header(self.server_id, st, message) + message.trace
        return None
