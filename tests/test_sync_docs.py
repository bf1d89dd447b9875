"""scripts/sync-docs writes every generated part of the docs (issue 12: adding a check changes no
shared page by hand): the settings reference, the settings blocks of the checks' own pages, and
the defences index from the assembly's list and the pages' first lines. Each is current, and
each way a page can disagree with the code is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_readme import ROOT, _sync_docs

ORDER = ["admission", "spf", "dkim"]
PAGES = {
    "spf.md": '# SPF\n\n<!-- defence: checks="spf" at="MAIL" default="score" -->\n',
    "admission.md": '# Admission\n\n<!-- defence: checks="admission" at="accept" default="" -->\n',
    "dkim.md": '# DKIM\n\n<!-- defence: checks="dkim" at="end of DATA" default="log" -->\n',
    "protocol.md": '# Protocol\n\n<!-- defence: checks="" at="every line" default="on" -->\n',
    "dns-checks.md": "# DNS checks: the common layer\n",
}


def test_every_generated_part_is_current() -> None:
    assert _sync_docs().stale() == [], "run scripts/sync-docs"


def test_the_check_command_names_a_stale_page(tmp_path: Path) -> None:
    """`sync-docs --check` on a copy of the docs with one index row edited by hand."""
    copy = tmp_path / "repo"
    for part in ("docs", "scripts", "src"):
        shutil.copytree(ROOT / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    index = copy / "docs" / "defences" / "README.md"
    index.write_text(index.read_text().replace("| on |", "| off |", 1))
    run = subprocess.run(
        [sys.executable, str(copy / "scripts" / "sync-docs"), "--check"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(copy / "src")},
        timeout=120,
    )
    assert run.returncode == 1
    assert run.stderr == "docs/defences/README.md is stale: run scripts/sync-docs\n"


def test_the_index_follows_the_assembly_order() -> None:
    text = _sync_docs().index(PAGES, ORDER)
    rows = [line.split("](")[1].split(")")[0] for line in text.splitlines() if "](" in line]
    # the checks' pages in the order the checks run, then the rest, then the fixed links
    assert rows[:4] == ["admission.md", "spf.md", "dkim.md", "protocol.md"]
    assert "| [SPF](spf.md) | MAIL | score |" in text
    assert "dns-checks.md" not in rows[:4]  # no `defence:` line: linked from the text only


@pytest.mark.parametrize(
    ("pages", "error"),
    [
        ({k: v for k, v in PAGES.items() if k != "dkim.md"}, r"documents check\(s\) dkim"),
        ({**PAGES, "x.md": '# X\n\n<!-- defence: checks="x" at="" default="" -->\n'}, "'x'"),
        ({**PAGES, "y.md": '# Y\n\n<!-- defence: checks="spf" at="" default="" -->\n'}, "two"),
    ],
    ids=["a check without a page", "a page naming no such check", "a check on two pages"],
)
def test_a_page_that_disagrees_with_the_list_is_refused(pages: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        _sync_docs().index(pages, ORDER)


LISTING = "[a]\nx = 1  # one\n\n[own]\ny = 2  # two\n"


def test_a_settings_block_is_filled_from_the_listing() -> None:
    page = "# Own\n\n## Settings\n\n<!-- settings: own -->\nold text\n<!-- end settings -->\nEnd.\n"
    filled, names = _sync_docs().fill_settings(page, LISTING)
    assert names == ["own"]
    block = "<!-- settings: own -->\n```toml\n[own]\ny = 2  # two\n```\n<!-- end settings -->"
    assert filled == f"# Own\n\n## Settings\n\n{block}\nEnd.\n"
    assert "[own]" not in _sync_docs().render(LISTING, frozenset({"own"}))
    assert "[own]" in _sync_docs().render(LISTING)
    with pytest.raises(ValueError, match=r"\[nothing\], which no check declares"):
        _sync_docs().fill_settings("<!-- settings: nothing -->\n<!-- end settings -->\n", LISTING)


def test_a_check_section_without_a_settings_block_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A section a check declares must be listed somewhere: on exactly one page."""
    sync_docs = _sync_docs()
    monkeypatch.setattr(sync_docs, "own_sections", lambda: frozenset({"tarpit"}))
    with pytest.raises(ValueError, match=r"exactly one .* block on a page: tarpit"):
        sync_docs.generated()
