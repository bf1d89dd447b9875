"""Cost of one hand-over message on the worker link: build and encode in the supervisor,
decode in the worker, against the positional tuple the link sent before the codec.

    python -m bench link_codec
"""

from __future__ import annotations

import marshal
import timeit
from collections.abc import Callable
from typing import Any

from mailmoat.server.link import Handover, decode, encode

ROUNDS = 200_000


def tuple_encode() -> bytes:
    return marshal.dumps(("conn", 12345, "192.0.2.1", 40000, False, [], None, True))


def tuple_decode(data: bytes = tuple_encode()) -> tuple[Any, ...]:
    _, conn_id, address, port, trusted, tags, verdict, greeted = marshal.loads(data)
    return (conn_id, address, port, bool(trusted), tuple(tags), verdict, bool(greeted))


def codec_encode() -> bytes:
    return encode([Handover(12345, "192.0.2.1", 40000, False, (), None, True)])


def codec_decode(data: bytes = codec_encode()) -> Any:
    return decode(data)


def best(fn: Callable[[], Any]) -> float:
    """Microseconds per call, the best of five rounds (the least disturbed)."""
    return min(timeit.repeat(fn, number=ROUNDS, repeat=5)) / ROUNDS * 1e6


def main() -> None:
    rows = [
        ("build + encode", best(tuple_encode), best(codec_encode)),
        ("decode", best(tuple_decode), best(codec_decode)),
    ]
    print("| step | positional tuple, us | Handover codec, us |")
    print("|---|---|---|")
    for step, old, new in rows:
        print(f"| {step} | {old:.2f} | {new:.2f} |")


if __name__ == "__main__":
    main()
