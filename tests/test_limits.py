"""Every number that shapes behaviour is written once (issue 12): a setting's default in the
settings model, or an internal limit in one table. A literal in a signature would be a second
place for one of them, and the two drift apart (`MemoryStore` held 1,000,000 keys while
`store.max_keys` said 200,000)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "mailmoat"

SIGNATURE_ALLOWED: dict[str, str] = {
    # "module.function(parameter)": why it may keep a literal default
    "policy.dkim.dnsfunc(timeout)": "dkimpy's callback signature; dkimpy passes its own value",
    "relay.smtp_client.close(timeout)": "moved to the limits table next",
    "server.admin.request(timeout)": "moved to the limits table next",
    "server.admin.fetch(timeout)": "moved to the limits table next",
    "server.link.request(timeout)": "moved to the limits table next",
    "smtp.replies.clean_text(limit)": "moved to the limits table next",
    "smtp.replies.__init__(max_lines)": "moved to the limits table next",
}


def _module(path: Path) -> str:
    return ".".join(path.relative_to(SRC).with_suffix("").parts)


_ARITHMETIC = (ast.BinOp, ast.UnaryOp, ast.operator, ast.unaryop)


def is_number(node: ast.expr) -> bool:
    """A number written out, or arithmetic of numbers (64 * 1024), but not 0 or 1."""
    if isinstance(node, ast.Constant):
        value = node.value
        return type(value) in (int, float) and value not in (0, 1)
    parts = [n for n in ast.walk(node) if not isinstance(n, _ARITHMETIC)]
    return isinstance(node, _ARITHMETIC) and all(
        isinstance(n, ast.Constant) and type(n.value) in (int, float) for n in parts
    )


def literal_defaults(tree: ast.AST, module: str) -> list[str]:
    """module.function(parameter) for every parameter whose default is a number written out."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        a = node.args
        positional = a.posonlyargs + a.args
        pairs = list(zip(positional[len(positional) - len(a.defaults) :], a.defaults, strict=True))
        pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d]
        found += [f"{module}.{node.name}({arg.arg})" for arg, d in pairs if is_number(d)]
    return found


def test_no_signature_writes_a_number_of_its_own() -> None:
    """Constructor and function defaults come from the settings (`config.default_of`) or the
    limits table, never from a literal."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] == "config":
            continue  # the settings model: the one place where defaults are written
        found += literal_defaults(ast.parse(path.read_text()), _module(path))
    assert sorted(set(found) - set(SIGNATURE_ALLOWED)) == []
    assert sorted(set(SIGNATURE_ALLOWED) - set(found)) == [], "stale allowlist entries"


def test_the_scan_sees_a_literal_default() -> None:
    code = "class A:\n    def __init__(self, n: int = 1_000_000, m: int = 64 * 1024, k=0): ...\n"
    assert literal_defaults(ast.parse(code), "m") == ["m.__init__(n)", "m.__init__(m)"]
    assert literal_defaults(ast.parse("def f(n=default_of(X, 'n'), t=TIMEOUT): ..."), "m") == []
