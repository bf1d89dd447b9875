"""The static file directory: format, errors, bounds, and reload on change."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailmoat.directory.base import Directories, Status, split_address
from mailmoat.directory.static import StaticDirectory, StaticFileError, parse
from tests.support.waiting import wait_for

FILE = """\
# staff
alice@example.test
Bob@Example.TEST          # mixed case in the file
sales@example.test  alice@example.test, bob@example.test   # alias
"quoted.user"@example.test
@catchall.test            # every address in catchall.test
"""


def check(d: StaticDirectory | Directories, address: str) -> Status | None:
    if isinstance(d, Directories):
        result = d.lookup(address, "192.0.2.1")
    else:
        local, domain = split_address(address)
        result = d.lookup(local, domain, "192.0.2.1")
    assert result is None or isinstance(result, Status)  # in-memory: answered at once
    return result


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_parse_addresses_aliases_catchall_and_comments(tmp_path: Path) -> None:
    path = tmp_path / "recipients"
    path.write_text(FILE)
    snap = parse(path, 100)
    assert snap.addresses == {
        "alice@example.test",
        "bob@example.test",
        "sales@example.test",
        "quoted.user@example.test",
    }
    assert snap.catchall == {"catchall.test"}
    assert snap.has("anything", "catchall.test") and not snap.has("anything", "example.test")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("alice@example.test\nnot-an-address\n", ":2: not an address"),
        ("alice@example.test\nsales@example.test  nobody\n", ":2: not an address"),
        ("alice@\n", ":1: not an address"),
        ("# only comments\n\n", "no address"),
        ("a@x.test\nb@x.test\nc@x.test\nd@x.test\n", "more than 3 addresses"),
        ("a" * 5000 + "@x.test\n", ":1: line longer than"),
        (b"\xff\xfe@x.test\n", "not UTF-8"),
    ],
)
def test_a_bad_file_is_refused_whole_with_the_line(
    tmp_path: Path, text: str | bytes, problem: str
) -> None:
    path = tmp_path / "recipients"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    with pytest.raises(StaticFileError, match=problem.replace("(", r"\(")):
        parse(path, 3)


async def test_a_missing_file_stops_the_start(tmp_path: Path) -> None:
    d = StaticDirectory(tmp_path / "nope")
    with pytest.raises(StaticFileError, match="No such file"):
        await d.start()


async def test_lookup_case_quotes_catchall_and_subaddress(tmp_path: Path) -> None:
    path = tmp_path / "recipients"
    path.write_text(FILE)
    d = StaticDirectory(path)
    dirs = Directories(
        {"example.test": d, "catchall.test": d}, delimiter="+", always_valid=["postmaster"]
    )
    await dirs.start()
    try:
        assert check(dirs, "alice@example.test") is Status.VALID
        assert check(dirs, "ALICE@example.test") is Status.VALID
        assert check(dirs, '"alice"@example.test') is Status.VALID
        assert check(dirs, "quoted.user@example.test") is Status.VALID
        assert check(dirs, "bob@example.test") is Status.VALID
        assert check(dirs, "sales@example.test") is Status.VALID
        assert check(dirs, "alice+news@example.test") is Status.VALID
        assert check(dirs, "nobody+alice@example.test") is Status.UNKNOWN
        assert check(dirs, "+alice@example.test") is Status.UNKNOWN
        assert check(dirs, "nobody@example.test") is Status.UNKNOWN
        assert check(dirs, "postmaster@example.test") is Status.VALID
        assert check(dirs, "whoever@catchall.test") is Status.VALID
        assert check(dirs, "alice@elsewhere.test") is None  # no directory for that domain
    finally:
        await dirs.close()


async def wait_for_loads(d: StaticDirectory, n: int) -> None:
    await wait_for(lambda: d.loads >= n, f"load {n} of the file")


async def test_reload_on_change_and_a_bad_version_keeps_the_last_good_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "recipients"
    path.write_text("alice@example.test\n")
    d = StaticDirectory(path, check_interval=0.05)
    await d.start()
    try:
        assert check(d, "alice@example.test") is Status.VALID
        assert check(d, "dave@example.test") is Status.UNKNOWN
        write_atomically(path, "dave@example.test\n")
        await wait_for_loads(d, 2)
        assert check(d, "dave@example.test") is Status.VALID
        assert check(d, "alice@example.test") is Status.UNKNOWN
        # edited in place (not atomically): still picked up once it stops changing
        with open(path, "a") as f:
            f.write("erin@example.test\n")
        await wait_for_loads(d, 3)
        assert check(d, "erin@example.test") is Status.VALID
        # a broken version is not loaded; the last good one stays in force
        write_atomically(path, "frank@example.test\nbroken line\n")
        await asyncio.sleep(0.3)
        assert d.loads == 3
        assert check(d, "dave@example.test") is Status.VALID
        assert check(d, "frank@example.test") is Status.UNKNOWN
        # the file vanishing keeps the last good version too
        path.unlink()
        await asyncio.sleep(0.2)
        assert check(d, "dave@example.test") is Status.VALID
        write_atomically(path, "gina@example.test\n")
        await wait_for_loads(d, 4)
        assert check(d, "gina@example.test") is Status.VALID
    finally:
        await d.close()


def test_a_non_ascii_letter_never_folds_onto_an_ascii_one(tmp_path: Path) -> None:
    """KELVIN SIGN (U+212A) lower-cases to `k` in Python: `\u212aim@` must not be vouched for
    by `kim@`, since the internal server sees another mailbox (invariant 4)."""
    from mailmoat.directory.base import AddressSetBuilder, split_address

    builder = AddressSetBuilder(10)
    builder.add("kim@example.test")
    builder.add("Kay@EXAMPLE.test")
    found = builder.build()
    assert split_address("\u212aim@example.test") == ("\u212aim", "example.test")
    assert split_address("KIM@Example.TEST") == ("kim", "example.test")
    assert found.has(*split_address("KIM@example.test"))
    assert not found.has(*split_address("\u212aim@example.test"))
    assert not found.has(*split_address("kim@example.\u212aest"))
