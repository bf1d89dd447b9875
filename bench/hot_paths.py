"""Costs paid once per attack connection, in microseconds: one hand-over message on the worker
link (built and encoded in the supervisor, decoded in the worker; against the positional
tuple the link sent before its codec) and one refusal's text log line (written to a stream
that keeps nothing).

    python -m bench hot_paths
"""

from __future__ import annotations

import io
import marshal
import timeit
from collections.abc import Callable
from typing import Any

from mailmoat import logs
from mailmoat.config import LogSettings
from mailmoat.server.link import Handover, decode, encode

ROUNDS = 100_000


def tuple_encode() -> bytes:
    return marshal.dumps(("conn", 12345, "192.0.2.1", 40000, False, [], None, True))


def tuple_decode(data: bytes = tuple_encode()) -> tuple[Any, ...]:
    _, conn_id, address, port, trusted, tags, verdict, greeted = marshal.loads(data)
    return (conn_id, address, port, bool(trusted), tuple(tags), verdict, bool(greeted))


def codec_encode() -> bytes:
    return encode([Handover(12345, "192.0.2.1", 40000, False, (), None, True)])


def codec_decode(data: bytes = codec_encode()) -> Any:
    return decode(data)


class _Discard(io.TextIOBase):
    """A stream that keeps nothing: the line is made and written, not stored."""

    def write(self, text: str) -> int:
        return len(text)


def refusal_line() -> None:
    logs.event(
        "refused",
        client="192.0.2.1",
        command="CONNECT",
        code=421,
        status="4.7.0",
        reason="banned",
        reply="mx.example.test Error: your address is temporarily blocked, try again later",
    )


def best(fn: Callable[[], Any]) -> float:
    """Microseconds per call, the best of five rounds (the least disturbed)."""
    return min(timeit.repeat(fn, number=ROUNDS, repeat=5)) / ROUNDS * 1e6


def main() -> None:
    rows = [
        ("build + encode", best(tuple_encode), best(codec_encode)),
        ("decode", best(tuple_decode), best(codec_decode)),
    ]
    print("| hand-over message | positional tuple, us | Handover codec, us |")
    print("|---|---|---|")
    for step, old, new in rows:
        print(f"| {step} | {old:.2f} | {new:.2f} |")
    logs.setup(LogSettings(format="text"), _Discard())
    print(f"\none refusal's text log line: {best(refusal_line):.1f} us")


if __name__ == "__main__":
    main()
