"""The code's shape (issue 12), asserted: no import cycle among mailmoat's modules (every import
counts, lazy and TYPE_CHECKING ones too), no module over 500 lines, and an engine (`smtp/`) that
imports nothing outside itself. `python -m tests.architecture` prints the same as a report."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import architecture


def test_no_import_cycle() -> None:
    assert architecture.cycles(architecture.imports(architecture.modules())) == []


def test_no_module_over_500_lines() -> None:
    assert architecture.oversized(architecture.modules()) == {}


def test_the_engine_imports_nothing_outside_smtp() -> None:
    assert architecture.engine_escapes(architecture.imports(architecture.modules())) == {}


def test_the_measures_see_what_they_measure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cycle (lazy and TYPE_CHECKING imports too), a long module and an engine import are
    each found in a scratch package."""
    pkg = tmp_path / "mailmoat"
    (pkg / "smtp").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from mailmoat import b\n")
    (pkg / "b.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mailmoat.a import f\n"
    )
    (pkg / "smtp" / "__init__.py").write_text("")
    (pkg / "smtp" / "engine.py").write_text("from mailmoat.a import f\n" + "x = 1\n" * 500)
    monkeypatch.setattr(architecture, "SRC", tmp_path)
    known = architecture.modules()
    graph = architecture.imports(known)
    assert architecture.cycles(graph) == [["mailmoat.a", "mailmoat.b"]]
    assert architecture.oversized(known) == {"mailmoat.smtp.engine": 501}
    assert architecture.engine_escapes(graph) == {"mailmoat.smtp.engine": {"mailmoat.a"}}
