"""DKIM verification (RFC 6376) of the message at the end of DATA, with dkimpy.

Neither the DNS nor the hashing blocks the event loop:

1. the key names (selector._domainkey.domain) of the first `dkim.max_signatures`
   DKIM-Signature fields are read from the header scan the message checks share;
2. those keys are fetched through our DNS layer, concurrently and cached;
3. in a worker thread, dkimpy parses the message and each signature and verifies it, its DNS
   function answering from the keys fetched in step 2. Should dkimpy's reading name a key
   step 1 missed, the thread stops before verifying, that key is fetched, and a second
   thread job verifies: one hand-off to a thread per message, two at worst. (Without a
   header scan, `verify(message)`, dkimpy's parse comes first, in a thread of its own.)

The RSA arithmetic is OpenSSL's (`dkim_openssl`); the relaxed body canonicalization is a
linear one, and so are the regular expressions dkimpy applies to a signature field
(`dkim_linear`).

A message without a DKIM-Signature header field (found by the header scan the other message
checks share) takes none of these steps: its result is "none" at once. The worker pool has
`dkim.workers` threads; each holds one message in memory while it works, so
memory stays bounded whatever the number of sessions. Results per signature (RFC 8601 2.7.1):
pass, fail (bad signature or body hash, or one that RFC 6376/8301 forbid and dkimpy
passes: see dkim_rules), policy (l= short of the body, or h= too long to verify within
bounds: see dkim_rules), neutral (a signature that cannot be parsed),
permerror (no usable key), temperror (the key lookup failed). RFC 6376 6.3 asks that a message
whose signatures all fail be treated like an unsigned one, hence the default action "log".
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from mailmoat.config import DkimSettings, default_of
from mailmoat.dns import Answer, Resolver, Status
from mailmoat.dns.resolver import normalise
from mailmoat.headers import Headers
from mailmoat.message import Message
from mailmoat.policy.base import Check, Client, HookResult, Verdict
from mailmoat.policy.results import DKIM, DkimResult
from mailmoat.policy.score import (
    Karma,
    Outcome,
    SessionState,
    apply,
    headers_now,
    message_headers,
)
from mailmoat.smtp.replies import reply

R_DKIM = reply(550, "5.7.20", "No passing DKIM signature found")

_quiet = logging.getLogger("mailmoat.dkimpy")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False


@cache
def _dkimpy() -> None:
    """Import dkimpy and set it up, once, when the first verifier is made (a process's start,
    not its first message): a process whose settings leave DKIM out never imports dkimpy,
    PyNaCl and OpenSSL's bindings (a tenth of a second of CPU or more at each start)."""
    import nacl.signing  # noqa: F401  dkimpy verifies ed25519-sha256 (RFC 8463) only with PyNaCl

    from mailmoat.policy import dkim_linear, dkim_openssl

    dkim_openssl.install()  # dkimpy's RSA arithmetic by OpenSSL: same answers, less CPU
    dkim_linear.install()  # dkimpy's quadratic regular expressions, linear: same matches


@dataclass(slots=True)
class _Sig:
    index: int
    domain: str = ""
    selector: str = ""
    b: str = ""
    error: str = ""
    fields: dict[bytes, bytes] = field(default_factory=dict)
    """The signature's tags, for the checks dkimpy leaves out (dkim_rules)."""
    prep: Any = None
    """dkimpy's `verify_headerprep` of it, kept for its `verify_sig` (not made twice)."""

    @property
    def key_name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}".lower()


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value or "")


def _prepare(message: Message, max_signatures: int) -> tuple[Any, list[_Sig]]:
    """Worker thread: parse the message and its signatures."""
    import dkim

    data = message.spool.getvalue()
    try:
        d = dkim.DKIM(data, logger=_quiet)
    except Exception as err:  # a header block dkimpy cannot parse (MessageFormatError)
        head = data.split(b"\r\n\r\n", 1)[0].lower()
        if b"dkim-signature" not in head:
            return None, []
        return None, [_Sig(0, error=f"message not parseable: {err}")]
    values = [value for name, value in d.headers if name.lower() == b"dkim-signature"]
    sigs = []
    for i in range(min(len(values), max_signatures)):
        sig = _Sig(i)
        sig.error = _bad_b_value(values[i])
        if sig.error:
            sigs.append(sig)
            continue
        try:
            prep = sig.prep = d.verify_headerprep(i)
            fields = sig.fields = prep[0] if prep else {}
            sig.domain = _text(fields.get(b"d")).lower()
            sig.selector = _text(fields.get(b"s"))
            sig.b = "".join(_text(fields.get(b"b")).split())[:8]
        except dkim.DKIMException as err:
            sig.error = str(err) or type(err).__name__
        sigs.append(sig)
    return d, sigs


def _bad_b_value(field: bytes) -> str:
    """Why dkimpy's validation would refuse the b= of signature field `field`, found before
    its quadratic regex runs (dkim_linear); "" when it would not, or when the tags do not
    parse (dkimpy says so itself)."""
    import dkim.util

    from mailmoat.policy import dkim_linear

    try:
        tags = dkim.util.parse_tag_value(field)
    except dkim.util.InvalidTagValueList:
        return ""
    return dkim_linear.bad_b_value(tags[b"b"]) if b"b" in tags else ""


def _verify(d: Any, sigs: list[_Sig], keys: dict[str, Answer]) -> list[DkimResult]:
    """Worker thread: verify each signature with the keys already fetched."""
    import dkim

    from mailmoat.policy.dkim_rules import refusal, unacceptable

    def dnsfunc(name: bytes | str, timeout: float = 5) -> bytes | None:
        answer = keys.get(normalise(_text(name)))
        return answer.records[0] if answer is not None and answer.records else None

    results = []
    for sig in sigs:
        base = {"domain": sig.domain, "selector": sig.selector, "b": sig.b}
        if sig.error:
            results.append(DkimResult("neutral", reason=sig.error, **base))
            continue
        bounded = unacceptable(sig.fields, len(d.headers), d.body)
        if bounded:
            results.append(DkimResult("policy", reason=bounded, **base))
            continue
        key = keys.get(f"{sig.selector}._domainkey.{sig.domain}".lower())
        if key is None or key.temporary:
            why = key.error if key is not None else "no key lookup"
            results.append(DkimResult("temperror", reason=f"key lookup: {why}", **base))
            continue
        if not key.records:
            results.append(DkimResult("permerror", reason="no key published", **base))
            continue
        refused = refusal(sig.fields, key.records[0])
        if refused:
            results.append(DkimResult("fail", reason=refused, **base))
            continue
        try:  # dkimpy's `verify` less the header prep made already
            prep = sig.prep
            ok = bool(prep) and d.verify_sig(prep[0], prep[1], prep[2][sig.index], dnsfunc)
        except dkim.DKIMException as err:
            results.append(DkimResult("fail", reason=str(err) or type(err).__name__, **base))
            continue
        except Exception as err:  # dkimpy on input it did not expect: not a pass
            results.append(DkimResult("permerror", reason=f"{type(err).__name__}: {err}", **base))
            continue
        results.append(DkimResult("pass" if ok else "fail", **base))
    return results


def _prepare_and_verify(
    message: Message, max_signatures: int, keys: dict[str, Answer]
) -> tuple[Any, list[_Sig], list[DkimResult] | None]:
    """Worker thread: both steps at once, with keys fetched before from the signatures as
    mailmoat's header scan read them; results None when dkimpy's reading names a key that
    was not fetched (then it is fetched and `_verify` runs)."""
    d, sigs = _prepare(message, max_signatures)
    if any(not s.error and s.key_name not in keys for s in sigs):
        return d, sigs, None
    try:
        return d, sigs, _verify(d, sigs, keys)
    except Exception as err:  # dkimpy on input it did not expect: no pass, no crash
        return d, sigs, _permerrors(sigs, err)


def _permerrors(sigs: list[_Sig], err: Exception) -> list[DkimResult]:
    return [DkimResult("permerror", s.domain, s.selector, s.b, repr(err)) for s in sigs]


def key_names(headers: Headers, max_signatures: int) -> list[str]:
    """The key names (selector._domainkey.domain) of the message's first signatures, read
    from the header scan with a plain split of the tags (dkimpy's parser costs more on the
    event loop than the hand-off saved): dkimpy's own reading decides, and a name missed or
    read otherwise here costs a second thread job, not a wrong result."""
    names = []
    for found in headers.get("dkim-signature")[:max_signatures]:
        tags = {}
        for tag in found.raw.partition(b":")[2].split(b";"):  # a plain split: cheap
            name, equals, value = tag.partition(b"=")
            if equals:
                tags[name.strip()] = value.strip()
        if b"d" in tags and b"s" in tags:
            sig = _Sig(0, domain=_text(tags[b"d"]).lower(), selector=_text(tags[b"s"]))
            names.append(sig.key_name)
    return names


class DkimVerifier:
    def __init__(
        self,
        resolver: Resolver,
        workers: int = default_of(DkimSettings, "workers"),
        max_signatures: int = default_of(DkimSettings, "max_signatures"),
    ) -> None:
        _dkimpy()
        self.resolver = resolver
        self.workers = workers
        self.max_signatures = max_signatures
        self._pool: ThreadPoolExecutor | None = None

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="mailmoat-dkim")
        return self._pool

    async def verify(self, message: Message, headers: Headers | None = None) -> list[DkimResult]:
        """Each signature's result. With `headers` (the message's header scan) the keys are
        fetched first and dkimpy parses and verifies in one thread job (one hand-off, not
        two, per message)."""
        loop = asyncio.get_running_loop()
        if headers is not None:
            keys = await self._keys(key_names(headers, self.max_signatures))
            d, sigs, results = await loop.run_in_executor(
                self._executor(), _prepare_and_verify, message, self.max_signatures, keys
            )
            if results is not None:
                return results
        else:
            d, sigs = await loop.run_in_executor(
                self._executor(), _prepare, message, self.max_signatures
            )
            if not sigs:
                return []
            keys = {}
        keys |= await self._keys(
            [s.key_name for s in sigs if not s.error and s.key_name not in keys]
        )
        try:
            return await loop.run_in_executor(self._executor(), _verify, d, sigs, keys)
        except Exception as err:  # dkimpy on input it did not expect: no pass, no crash
            return _permerrors(sigs, err)

    async def _keys(self, wanted: list[str]) -> dict[str, Answer]:
        """The usable key records of each name, fetched concurrently (cached by the resolver)."""
        names = sorted(set(wanted))
        answers = await asyncio.gather(*(self.resolver.query(n, "TXT") for n in names))
        keys = {}
        for name, answer in zip(names, answers, strict=True):
            if answer.status is Status.OK:
                # a key record starts with v=DKIM1, or has no v= at all (RFC 6376 3.6.1)
                usable = tuple(
                    r for r in answer.records if r.startswith(b"v=DKIM1") or b"v=" not in r
                )
                answer = Answer(name, "TXT", Status.OK if usable else Status.NODATA, usable)
            keys[name] = answer
        return keys

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def unsigned(headers: Headers) -> bool:
    """No DKIM-Signature field, in a header block dkimpy reads as we do: it would find none
    either, so there is nothing to verify (the result is "none")."""
    return headers.strict and not headers.counts.get("dkim-signature")


def summary(results: list[DkimResult]) -> str:
    """One result for the message: pass if any signature passes."""
    if not results:
        return "none"
    kinds = {r.result for r in results}
    for kind in ("pass", "temperror", "fail", "policy", "permerror", "neutral"):
        if kind in kinds:
            return kind
    return "none"


class DkimCheck(Check):
    name = "dkim"
    writes = (DKIM,)

    def __init__(self, settings: DkimSettings, resolver: Resolver, karma: Karma) -> None:
        self.s = settings
        self.verifier = DkimVerifier(resolver, settings.workers, settings.max_signatures)
        self.karma = karma

    def message(self, client: Client, message: Message) -> HookResult:
        st = self.karma.state(client)
        if st.exempt:
            return None
        headers = headers_now(st, message)
        if headers is not None and unsigned(headers):
            return self._apply(st, [])  # nothing to verify: no copy, no thread
        return self._verify(st, message)

    async def _verify(self, st: SessionState, message: Message) -> Verdict:
        headers = await message_headers(st, message)
        if unsigned(headers):
            return self._apply(st, [])
        return self._apply(st, await self.verifier.verify(message, headers))

    def _apply(self, st: SessionState, results: list[DkimResult]) -> Verdict:
        st.set(DKIM, results)
        if self.s.action == "off":
            return None
        result = summary(results)
        reason = "; ".join(
            f"{r.domain}/{r.selector} {r.result}" + (f" ({r.reason})" if r.reason else "")
            for r in results
        )
        return apply(
            st,
            Outcome(self.name, result, reason),
            self.s.action,
            R_DKIM,
            failed=result in ("fail", "policy", "permerror", "neutral"),
            points=self.s.points,
            per_transaction=True,
        )

    async def close(self) -> None:
        self.verifier.close()
