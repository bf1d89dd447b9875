"""bench/fuzz_engine.py, loaded by path (bench/ is a directory of scripts, not a package).

Its `Harness` drives the engine and checks the invariants; the property tests and the brief
fuzz test share it with the fuzzer.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_NAME = "mailmoat_bench_fuzz_engine"
_PATH = Path(__file__).resolve().parents[2] / "bench" / "fuzz_engine.py"


def _load():
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    spec = importlib.util.spec_from_file_location(_NAME, _PATH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module


fuzz_engine = _load()
