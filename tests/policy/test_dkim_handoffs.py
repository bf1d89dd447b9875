"""DKIM verification with the header scan (policy/dkim.py): one thread job per message.

With the message's header scan, the keys are fetched first and dkimpy parses and verifies in
a single job of the verifier's thread pool; when dkimpy reads a signature differently from
the scan (here: the scan of another message), a second job verifies with the key it names.
Either way every signature gets the result the two-step path gives.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from typing import Any

import pytest

from mailmoat.message import Message
from mailmoat.policy.dkim import DkimVerifier
from tests.support import dns_zone as zone
from tests.support.dns_gateway import message
from tests.support.fake_dns import ZoneNameserver
from tests.support.fake_dns import resolver as fake_resolver

from .test_dkim_variants import as_message, key_records, signature, with_b


@pytest.fixture
async def verifier() -> AsyncIterator[DkimVerifier]:
    dns = ZoneNameserver.from_dnsmasq(zone.records() + key_records())
    v = DkimVerifier(fake_resolver(dns, timeout=2.0))
    try:
        yield v
    finally:
        v.close()


def jobs(verifier: DkimVerifier) -> list[str]:
    """The names of the functions the verifier's thread pool is given, from now on (a spy:
    each still runs)."""
    pool = verifier._executor()
    submit = pool.submit
    names: list[str] = []

    def counted(fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        names.append(fn.__name__)
        return submit(fn, *args, **kwargs)

    pool.submit = counted  # type: ignore[method-assign]
    return names


def variants() -> dict[str, tuple[bytes, list[str]]]:
    """Messages, and the result of each of their signatures."""
    msg = message()
    plain = signature(msg, "plain")
    return {
        "one rsa signature": (plain + msg, ["pass"]),
        "ed25519 and rsa": (signature(msg, "ed", b"ed25519-sha256") + plain + msg, ["pass"] * 2),
        "body changed": (plain + msg.replace(b"Hello.", b"Hullo."), ["fail"]),
        "no key published": (plain.replace(b"s=plain", b"s=absent") + msg, ["permerror"]),
        "bad signature": (with_b(plain, b"\x01" * 256) + msg, ["fail"]),
        "unreadable tags": (b"DKIM-Signature: v=1; a=rsa-sha256; ==\r\n" + msg, ["neutral"]),
    }


@pytest.mark.parametrize("name", list(variants()))
async def test_one_job_and_the_same_results(verifier: DkimVerifier, name: str) -> None:
    data, expected = variants()[name]
    two_steps = await verifier.verify(as_message(data))
    assert [r.result for r in two_steps] == expected, two_steps
    submitted = jobs(verifier)
    msg: Message = as_message(data)
    one_step = await verifier.verify(msg, await msg.read_headers())
    assert one_step == two_steps
    assert submitted == ["_prepare_and_verify"], submitted


async def test_a_signature_the_scan_missed_gets_its_key_in_a_second_job(
    verifier: DkimVerifier,
) -> None:
    msg = message()
    data = signature(msg, "plain") + msg
    other = as_message(signature(msg, "ed", b"ed25519-sha256") + msg)
    submitted = jobs(verifier)
    found = await verifier.verify(as_message(data), await other.read_headers())
    assert [(r.selector, r.result) for r in found] == [("plain", "pass")], found
    assert submitted == ["_prepare_and_verify", "_verify"], submitted
