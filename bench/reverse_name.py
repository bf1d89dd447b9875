"""How much cheaper mailmoat's reverse_name is than dnspython's reversename (the speed check that
used to be a unit test: a timed comparison belongs here, not in the suite).

    python -m bench reverse_name [--rounds 200000]
"""

from __future__ import annotations

import argparse
import ipaddress
import time
from collections.abc import Callable

import dns.reversename

from mailmoat.dns import reverse_name

ADDRESSES = ["198.51.100.23", "2001:db8:0:1:ffff:ffff:ffff:ffff"]


def per_call(fn: Callable[[], object], rounds: int) -> float:
    """Nanoseconds per call, the best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            fn()
        best = min(best, time.perf_counter() - started)
    return best / rounds * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200_000)
    args = parser.parse_args()
    print(f"{'address':<34} {'mailmoat':>10} {'dnspython':>10}  ratio")
    for text in ADDRESSES:
        ip = ipaddress.ip_address(text)
        ours = per_call(lambda ip=ip: reverse_name(ip), args.rounds)
        theirs = per_call(
            lambda text=text: dns.reversename.from_address(text).to_text(omit_final_dot=True),
            args.rounds,
        )
        print(f"{text:<34} {ours:>8.0f}ns {theirs:>8.0f}ns  {theirs / ours:4.1f}x")


if __name__ == "__main__":
    main()
