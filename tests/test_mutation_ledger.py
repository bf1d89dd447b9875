"""scripts/mutation --ledger: the mutants a ledger records are the ones a later run skips, so a
run cut by the clock goes on where it stopped (cosmic-ray runs its mutants in random order)."""

from __future__ import annotations

import subprocess
import sys
from functools import cache
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = "src/m.py"


@cache
def _script() -> ModuleType:
    loader = SourceFileLoader("mutation_script", str(ROOT / "scripts" / "mutation"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


def _item(line: int, old: str, new: str) -> dict[str, object]:
    return {
        "mutations": [{"start_pos": [line, 4], "operator_name": "core/NumberReplacer"}],
        "diff": f"--- a/{MODULE}\n+++ b/{MODULE}\n@@ -1 +1 @@\n-{old}\n+{new}",
    }


def test_the_ledger_records_each_mutant_run_by_path(tmp_path: Path) -> None:
    script = _script()
    ledger = tmp_path / "runs.jsonl"
    assert script.ledger_done(ledger, MODULE) == set()  # no ledger yet: nothing run
    script._record(ledger, MODULE, _item(3, "x = 0", "x = 1"), "killed")
    script._record(ledger, MODULE, _item(4, "y = 2", "y = 3"), "survived")
    script._record(ledger, "src/other.py", _item(3, "x = 0", "x = 1"), "killed")
    assert script.ledger_done(ledger, MODULE) == {
        (3, "NumberReplacer", "x = 1"),
        (4, "NumberReplacer", "y = 3"),
    }


def test_a_run_with_the_ledger_keeps_only_the_mutants_not_recorded(tmp_path: Path) -> None:
    pytest.importorskip("cosmic_ray")
    script = _script()
    (tmp_path / "src").mkdir()
    (tmp_path / MODULE).write_text("x = 0\ny = 2\nz = 5\n")
    (tmp_path / "cr.toml").write_text(script._config(MODULE, "true", 10.0, None))
    bindir = Path(sys.executable).parent
    subprocess.run(
        [bindir / "cosmic-ray", "init", "cr.toml", "cr.sqlite"], cwd=tmp_path, check=True
    )
    from cosmic_ray.work_db import WorkDB, use_db

    def pending() -> int:
        with use_db(str(tmp_path / "cr.sqlite"), WorkDB.Mode.open) as db:
            return len(db.pending_work_items)

    planned = pending()
    assert planned >= 6  # each number replaced by one more and one less, at least
    ledger = tmp_path / "runs.jsonl"
    script._record(ledger, MODULE, _item(1, "x = 0", "x = 1"), "killed")
    script._record(ledger, MODULE, _item(2, "y = 2", "y = 3"), "survived")
    script._keep_only(tmp_path, script.ledger_done(ledger, MODULE), skip=True)
    assert pending() == planned - 2
