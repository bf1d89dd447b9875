"""dkimpy's quadratic paths against mailmoat's linear replacements (policy/dkim_linear.py),
on the crafted inputs that find them, at two sizes: CPU of each and the ratio, in one run.

python -m bench dkim_linear            (about 10 s of CPU, most of it dkimpy's)
python -m bench dkim_linear --quick

A quadratic path shows as a 4x CPU for 2x the input; a linear one as 2x (the relaxed body is
quadratic in the line's length, which smtp.max_text_line bounds, so it grows 2x in lines).
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from mailmoat.policy import dkim_linear

_CASES: list[tuple[str, Callable[[int], bytes], Callable[[bytes], Any], Callable[[bytes], Any]]] = [
    (
        "relaxed body: 998-octet lines of blanks (x100 lines)",
        lambda k: (b" " * 995 + b"x\r\n") * (k * 100),
        dkim_linear.DKIMPY_STRIP,
        dkim_linear.strip_trailing_whitespace,
    ),
    (
        "b= removal: ' b' + folded blank lines (x1000)",
        lambda k: b"v=1; b" + b"\r\n " * (k * 1000) + b"x",
        lambda v: dkim_linear.DKIMPY_BTAG.sub(b"\\1", v),
        lambda v: dkim_linear.RE_BTAG.sub(b"\\1", v),
    ),
    (
        "b= base64 check: 'A' + blanks + '!' (x1000)",
        lambda k: b"A" + b" " * (k * 1000) + b"!",
        lambda v: __import__("re").match(rb"[\s0-9A-Za-z+/]+[\s=]*$", v),
        dkim_linear.bad_b_value,
    ),
    (
        "message parse: a field of folded lines (x10000)",
        lambda k: b"From: a@b\r\nX: x" + b"\r\n " * (k * 10000) + b"\r\n\r\nbody\r\n",
        dkim_linear.DKIMPY_PARSE,
        dkim_linear.rfc822_parse,
    ),
]


def _cpu(function: Callable[[bytes], Any], data: bytes) -> float:
    start = time.process_time()
    function(data)
    return time.process_time() - start


def _peak(function: Callable[[bytes], Any], data: bytes) -> int:
    tracemalloc.start()
    try:
        function(data)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller inputs")
    args = parser.parse_args()
    sizes = (1, 2) if args.quick else (4, 8)
    print(f"load: {os.getloadavg()[0]:.2f} (1 min)")
    for name, make, dkimpy, ours in _CASES:
        for n in sizes:
            data = make(n)
            theirs, mine = _cpu(dkimpy, data), _cpu(ours, data)
            print(
                f"{name} n={n} ({len(data)} B): dkimpy {theirs * 1e3:.1f} ms, "
                f"mailmoat {mine * 1e3:.2f} ms, {theirs / max(mine, 1e-6):.0f}x"
            )
    body = b"From: a@b\r\n\r\n" + b"a\r\n" * ((1 if args.quick else 4) * 2**20 // 3)
    theirs, mine = _peak(dkim_linear.DKIMPY_PARSE, body), _peak(dkim_linear.rfc822_parse, body)
    print(
        f"message parse, {len(body) >> 20} MiB body of 3-octet lines: peak memory dkimpy "
        f"{theirs / 2**20:.0f} MiB, mailmoat {mine / 2**20:.1f} MiB ({theirs / mine:.0f}x)"
    )
    return 0
