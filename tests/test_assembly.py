"""The one ordered list of defences (mailmoat.assembly): its order is the one its docstring
names, every role runs that list (selecting from it, not rebuilding it), and an order in which
a check would read a slot before it is written is refused."""

from __future__ import annotations

import ast
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from mailmoat import assembly
from mailmoat.assembly import Defences, check_order
from mailmoat.dns import Resolver
from mailmoat.policy.auth import AuthResultsCheck
from mailmoat.policy.base import Check
from mailmoat.policy.fcrdns import FcrdnsCheck
from mailmoat.policy.score import Karma
from mailmoat.server.gateway import Gateway
from mailmoat.server.supervisor import Supervisor
from mailmoat.server.worker import Release, Worker
from mailmoat.stats import Stats
from mailmoat.store import MemoryStore
from tests.support.gateway import gateway_settings

POLICY = Path(assembly.__file__).parent / "policy"


def _documented_order() -> list[str]:
    """The check names in the table of assembly's docstring, in order."""
    doc = assembly.__doc__ or ""
    table = doc.split("and in what order:", 1)[1].split("\n\n", 2)[1]
    return [line.split()[0] for line in table.splitlines()]


def _everything_on(tmp_path: Path) -> Any:
    recipients = tmp_path / "recipients"
    recipients.write_text("alice@example.test\n")
    return gateway_settings(
        tmp_path / "md",
        **{
            "dns.checks": True,
            "dns.nameservers": ["127.0.0.1:9"],  # never asked: nothing is looked up here
            "dnsbl.lists": ["zen.example.test"],
            "dmarc.action": "reject",
            "directory.domains": {"example.test": "static"},
            "directory.static_file": str(recipients),
        },
    )


def _names(checks: list[Check]) -> list[str]:
    return [c.name for c in checks]


def test_the_list_is_the_documented_order_with_everything_on(tmp_path: Path) -> None:
    settings = _everything_on(tmp_path)
    store = MemoryStore()
    checks = assembly.build(settings, store, Defences(settings, Stats(), store))
    assert _names(checks) == _documented_order()


def test_checks_that_are_off_are_left_out_in_the_same_order(tmp_path: Path) -> None:
    settings = gateway_settings(
        tmp_path / "md",
        **{
            "dns.checks": True,
            "fcrdns.action": "off",
            "helo.action": "off",
            "dmarc.action": "off",
            "dmarc.quarantine_action": "off",
        },
    )
    store = MemoryStore()
    checks = assembly.build(settings, store, Defences(settings, Stats(), store))
    # spf and dkim run with their default actions; no list configured: no dnsbl
    expected = [n for n in _documented_order() if n not in ("harvest", "dnsbl", "fcrdns")]
    expected = [n for n in expected if n not in ("helo", "dmarc", "recipients")]
    assert _names(checks) == expected


def test_a_rebuild_follows_new_settings_and_keeps_the_front(tmp_path: Path) -> None:
    """What a reload does: the same live defences, the session's checks made anew."""
    before = gateway_settings(tmp_path / "md")
    store = MemoryStore()
    defences = Defences(before, Stats(), store)
    old = assembly.build(before, store, defences)
    after = before.model_copy(update={"dns": before.dns.model_copy(update={"checks": True})})
    new = assembly.build(after, store, defences)
    assert "score" not in _names(old) and "score" in _names(new)
    front = defences.checks()
    assert old[: len(front)] == new[: len(front)] == front
    assert not set(map(id, old[len(front) :])) & set(map(id, new[len(front) :]))


async def test_every_role_runs_the_one_list(tmp_path: Path) -> None:
    settings = _everything_on(tmp_path)
    order = [*_documented_order(), "capabilities"]

    one = Gateway(settings)
    assert _names(one.pipeline.checks) == order

    supervisor = Supervisor(settings, 2)
    front = supervisor.defences.checks()
    assert supervisor.pipeline.checks == front  # at accept: the front of the list
    local = supervisor.local.pipeline.checks
    assert _names(local) == [*_documented_order(), "local_slots", "capabilities"]
    assert local[: len(front)] == front  # the same objects: one admission, one ban list

    ours, theirs = socket.socketpair()
    with ours, theirs:
        worker = Worker(settings, ours)
        checks = worker.gateway.pipeline.checks
        assert _names(checks) == order
        assert isinstance(checks[0], Release)  # the supervisor admits; the worker releases


def test_a_check_that_reads_a_slot_before_it_is_written_is_refused(tmp_path: Path) -> None:
    settings = gateway_settings(tmp_path / "md", **{"dns.checks": True})
    karma = Karma(settings.score)
    resolver = Resolver(settings.dns)  # nothing is looked up: no hook runs
    fcrdns = FcrdnsCheck(settings.fcrdns, resolver, karma)
    header = AuthResultsCheck(settings.auth, "mx.test", karma)
    check_order([fcrdns, header])
    with pytest.raises(ValueError, match="auth_results reads fcrdns before it is written"):
        check_order([header, fcrdns])
    with pytest.raises(ValueError, match="both write fcrdns"):
        check_order([fcrdns, FcrdnsCheck(settings.fcrdns, resolver, karma)])


BOARD = {"base", "results", "score", "networks"}
"""What checks share: the hooks and slots, the result types, the score, address helpers."""

SHARED_STATE = {
    ("admission", "bans"): "admission refuses the banned and strikes: it asks the ban list",
    ("tarpit", "bans"): "the tarpit slows suspects down: it asks the ban list",
    ("recipients", "harvest"): "unknown recipients feed the harvest detector both share",
}
"""A check that holds another's live state object (built once in the assembly), not its
results: each pair says why."""


def _check_modules() -> set[str]:
    """The policy modules that define a Check."""
    found = set()
    for path in POLICY.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and any(
                isinstance(b, ast.Name) and b.id == "Check" for b in node.bases
            ):
                found.add(path.stem)
    return found


def test_no_check_imports_another_check() -> None:
    """Results travel in slots (policy.results), never through an import of their maker."""
    checks = _check_modules()
    assert {"dnsbl", "fcrdns", "helo", "spf", "dkim", "dmarc", "auth", "bans"} <= checks
    for name in sorted(checks - BOARD):
        source = (POLICY / f"{name}.py").read_text()
        imported = set(re.findall(r"^\s*from mailmoat\.policy\.(\w+) import", source, re.M))
        others = {m for m in imported & checks if m not in BOARD and (name, m) not in SHARED_STATE}
        assert not others, f"{name} imports the checks {others}"
