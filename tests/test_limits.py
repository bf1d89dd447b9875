"""Every number that shapes behaviour is written once (issue 12): a setting's default in the
settings model, or an internal limit in one table. A literal in a signature would be a second
place for one of them, and the two drift apart (`MemoryStore` held 1,000,000 keys while
`store.max_keys` said 200,000)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "mailmoat"

LIMITS = SRC / "limits.py"

PROTOCOL: dict[str, str] = {
    # numbers an RFC fixes: they stay beside the code that implements the RFC
    "smtp.replies.MAX_REPLY_LINE": "RFC 5321 4.5.3.1.5: a reply line is at most 512 octets",
    "policy.dkim_rules.MIN_RSA_BITS": "RFC 8301 3.2: shorter RSA keys are not valid",
    "relay.downstream._OUR_FAULT": "RFC 5321 reply codes (500, 502, 503) for a bad command",
    "smtp.replies.clean_text(limit)": "RFC 5321 reply text, within MAX_REPLY_LINE",
    "server.proxy_header.V1_MAX": "PROXY protocol spec 2.1: a v1 line is at most 107 octets",
    "server.proxy_header.V2_FIXED": "PROXY protocol spec 2.2: the fixed v2 header is 16 octets",
    "server.proxy_header._V2_ADDRESS_BLOCK": "PROXY protocol spec 2.2: TCP address block sizes",
    "milter.codec.VERSION": "libmilter mfdef.h: the milter protocol version spoken (6)",
    "milter.codec.ACT_ADDHDRS": "libmilter mfdef.h: SMFIF_ADDHDRS",
    "milter.codec.ACT_CHGHDRS": "libmilter mfdef.h: SMFIF_CHGHDRS",
    "milter.codec.ACT_SETSYMLIST": "libmilter mfdef.h: SMFIF_SETSYMLIST",
    "milter.codec.P_NOUNKNOWN": "libmilter mfdef.h: SMFIP_NOUNKNOWN",
    "milter.codec.P_RCPT_REJ": "libmilter mfdef.h: SMFIP_RCPT_REJ",
    "milter.codec.P_NR_HDR": "libmilter mfdef.h: SMFIP_NR_HDR",
    "milter.codec.P_NR_EOH": "libmilter mfdef.h: SMFIP_NR_EOH",
    "milter.codec.P_NR_BODY": "libmilter mfdef.h: SMFIP_NR_BODY",
    "milter.codec.P_HDR_LEADSPC": "libmilter mfdef.h: SMFIP_HDR_LEADSPC",
    "milter.codec.P_NODATA": "libmilter mfdef.h: SMFIP_NODATA",
    "milter.codec.P_NOEOH": "libmilter mfdef.h: SMFIP_NOEOH",
}
ENGINE: dict[str, str] = {
    # the sans-IO engine imports nothing outside smtp/ (DESIGN.md): its own fixed bounds
    "smtp.replies._SHORT_LINE": "one-line replies longer than this are not cached",
    "smtp.replies.__init__(max_lines)": "lines of one downstream reply before it is an error",
}
OTHER: dict[str, str] = {
    "policy.dkim.dnsfunc(timeout)": "dkimpy's callback signature; dkimpy passes its own value",
    "policy.dmarc._SEVERITY": "an order of outcomes (which one is strictest), not a quantity",
}
ALLOWED = PROTOCOL | ENGINE | OTHER


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
    assert sorted(set(found) - set(ALLOWED)) == []


def test_the_scan_sees_a_literal_default() -> None:
    code = "class A:\n    def __init__(self, n: int = 1_000_000, m: int = 64 * 1024, k=0): ...\n"
    assert literal_defaults(ast.parse(code), "m") == ["m.__init__(n)", "m.__init__(m)"]
    assert literal_defaults(ast.parse("def f(n=default_of(X, 'n'), t=TIMEOUT): ..."), "m") == []


def is_quantity(node: ast.expr) -> bool:
    """A number (0 and 1 too), arithmetic of numbers, or a tuple, set or dict of them."""
    if isinstance(node, ast.Constant):
        return type(node.value) in (int, float)
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return bool(node.elts) and all(is_quantity(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return bool(node.values) and all(is_quantity(v) for v in node.values)
    return is_number(node)


def constants(tree: ast.Module, module: str) -> list[str]:
    """module.NAME (or module.Class.NAME) for each upper-case name bound to a quantity."""
    scopes = [("", tree.body)]
    scopes += [(f"{n.name}.", n.body) for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]
    found = []
    for prefix, body in scopes:
        for st in body:
            if isinstance(st, ast.Assign) and len(st.targets) == 1:
                target, value = st.targets[0], st.value
            elif isinstance(st, ast.AnnAssign) and st.value is not None:
                target, value = st.target, st.value
            else:
                continue
            name = target.id if isinstance(target, ast.Name) else ""
            if name.lstrip("_").isupper() and is_quantity(value):
                found.append(f"{module}.{prefix}{name}")
    return found


def declares_own_section(tree: ast.Module) -> bool:
    """The module of a check that declares its own settings section (`@own_section(...)`)."""
    return any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "own_section"
        for node in tree.body
        if isinstance(node, ast.ClassDef)
        for d in node.decorator_list
    )


def documented(tree: ast.Module, module: str) -> list[str]:
    """module.NAME for each module-level name followed by its docstring (its why)."""
    found = []
    for st, after in zip(tree.body, tree.body[1:], strict=False):
        target = st.targets[0] if isinstance(st, ast.Assign) else getattr(st, "target", None)
        if not (isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)):
            continue
        if isinstance(target, ast.Name) and str(after.value.value).strip():
            found.append(f"{module}.{target.id}")
    return found


def test_every_behaviour_constant_is_in_the_limits_table() -> None:
    """A number that shapes behaviour lives in `mailmoat.limits` with its why; a module that
    needs it imports it from there. A check that declares its own settings section keeps its
    fixed numbers in its module instead, each followed by its why as in the table, so adding
    a check touches no shared file for them (issue 12)."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if path != LIMITS:
            tree = ast.parse(path.read_text())
            own = set(documented(tree, _module(path))) if declares_own_section(tree) else set()
            found += [c for c in constants(tree, _module(path)) if c not in own]
    assert sorted(set(found) - set(ALLOWED)) == [], "move these to src/mailmoat/limits.py"


def test_a_check_with_its_own_section_keeps_documented_constants() -> None:
    code = (
        'TRIES = 3\n"""Why three."""\nBARE = 4\n'
        "@own_section('x')\nclass XSettings(Section):\n    pass\n"
    )
    tree = ast.parse(code)
    assert declares_own_section(tree)
    assert documented(tree, "m") == ["m.TRIES"]  # BARE says no why: it belongs in the table
    assert not declares_own_section(ast.parse(code.replace("@own_section('x')\n", "")))


def test_allowlists_name_what_is_there() -> None:
    seen = set()
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        seen |= set(constants(tree, _module(path))) | set(literal_defaults(tree, _module(path)))
    assert sorted(set(ALLOWED) - seen) == [], "stale allowlist entries"
    assert all(why.strip() for why in ALLOWED.values())


def test_every_limit_says_why_and_is_used() -> None:
    body = ast.parse(LIMITS.read_text()).body
    names = []
    for i, st in enumerate(body):
        if isinstance(st, ast.Assign) and isinstance(st.targets[0], ast.Name):
            name = st.targets[0].id
            if name in ("KiB", "DAY"):
                continue  # units
            names.append(name)
            doc = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), name
            assert str(doc.value.value).strip(), name
    assert len(names) > 50
    code = "\n".join(p.read_text() for p in SRC.rglob("*.py") if p != LIMITS)
    unused = [n for n in names if not re.search(rf"\b{n}\b", code)]
    assert unused == [], "limits no module uses"


def test_the_scan_sees_a_new_constant() -> None:
    code = "X = 5\nY: float = 2 * 60.0\nZ = {4: 8}\nNAME = 'text'\nclass A:\n    LIMIT = 3\n"
    assert constants(ast.parse(code), "m") == ["m.X", "m.Y", "m.Z", "m.A.LIMIT"]
