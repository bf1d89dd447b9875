"""Measures of the code's shape (issue 12): import cycles, module sizes, the engine's imports.

Run as `python -m tests.architecture` for a report; tests/test_architecture.py asserts it.
Every import counts: module level, inside functions, and under TYPE_CHECKING.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "mailmoat"
MAX_LINES = 500


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    found: dict[str, Path] = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _resolve(name: str, level: int, current: str, is_package: bool) -> str:
    if level == 0:
        return name
    base = current.split(".") if is_package else current.split(".")[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join([*base, name] if name else base)


def imports(known: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (any import anywhere in the file)."""
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                candidates = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node.module or "", node.level, name, is_package)
                candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
            else:
                continue
            for candidate in candidates:
                # "from pkg import mod" names a module; "from mod import thing" names mod.
                while candidate and candidate not in known:
                    candidate = candidate.rpartition(".")[0]
                if candidate and candidate != name and candidate.startswith(PACKAGE):
                    targets.add(candidate)
        graph[name] = targets
    # A package's __init__ is imported whenever one of its modules is; that edge is not a cycle
    # the code chose, so only explicit imports count.
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def oversized(known: dict[str, Path]) -> dict[str, int]:
    sizes = {name: len(path.read_text().splitlines()) for name, path in known.items()}
    return {name: n for name, n in sizes.items() if n > MAX_LINES}


def engine_escapes(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Imports from mailmoat.smtp.* to anything outside mailmoat.smtp."""
    prefix = f"{PACKAGE}.smtp"
    return {
        name: {t for t in targets if not (t == prefix or t.startswith(prefix + "."))}
        for name, targets in graph.items()
        if (name == prefix or name.startswith(prefix + "."))
        and any(not (t == prefix or t.startswith(prefix + ".")) for t in targets)
    }


def main() -> None:
    known = modules()
    graph = imports(known)
    for component in cycles(graph):
        print("cycle:", " <-> ".join(component))
    for name, n in sorted(oversized(known).items()):
        print(f"over {MAX_LINES} lines: {name} ({n})")
    for name, targets in sorted(engine_escapes(graph).items()):
        print(f"engine imports outside smtp/: {name} -> {', '.join(sorted(targets))}")


if __name__ == "__main__":
    main()
