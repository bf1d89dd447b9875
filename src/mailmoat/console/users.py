"""The console's users file: one ``NAME:ARGON2ID-HASH`` per line, written by
`mailmoat console adduser`. There is no default user: a console with no user does not start."""

from __future__ import annotations

import os
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from mailmoat.limits import CONSOLE_USERS_MAX

if TYPE_CHECKING:
    from argon2 import PasswordHasher

NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")


@cache
def _hasher() -> PasswordHasher:
    """argon2id with the library's recommended (RFC 9106) parameters. Made at first use: every
    `mailmoat serve` imports this module, and only a console needs argon2."""
    from argon2 import PasswordHasher

    return PasswordHasher()


@cache
def _dummy() -> str:
    """Verified against when the name is unknown, so an unknown name takes as long as a wrong
    password (no user enumeration by timing). Hashed when a users file is loaded (the console's
    start), not at import: that is a tenth of a second of argon2 work a gateway without a
    console never needs, and no login waits for it."""
    return _hasher().hash("a password no one has")


class UsersError(ValueError):
    """The users file cannot be used; the message is one line for the administrator."""


def load(path: Path) -> dict[str, str]:
    """Name -> hash; UsersError if the file is missing, malformed or names no user."""
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UsersError(f"console.users_file {path}: cannot read it ({err})") from None
    users: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        name, colon, hashed = line.strip().partition(":")
        if not colon or not NAME.fullmatch(name) or not hashed.startswith("$argon2id$"):
            raise UsersError(
                f"console.users_file {path} line {number}: expected NAME:ARGON2ID-HASH"
            )
        users[name] = hashed
        if len(users) > CONSOLE_USERS_MAX:
            raise UsersError(f"console.users_file {path}: more than {CONSOLE_USERS_MAX} users")
    if not users:
        raise UsersError(
            f"console.users_file {path} names no user: add one with"
            " `mailmoat console adduser NAME --file FILE`"
        )
    _dummy()
    return users


def verify(users: dict[str, str], name: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    hashed = users.get(name)
    try:
        return _hasher().verify(hashed or _dummy(), password) and hashed is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def add(path: Path, name: str, password: str) -> None:
    """Add or replace `name` in the file (made mode 0600 if new); UsersError on bad input."""
    if not NAME.fullmatch(name):
        raise UsersError(f"user name {name!r}: use 1-64 letters, digits, . _ @ -")
    if not password:
        raise UsersError("empty password")
    lines: list[str] = []
    if path.exists():
        try:
            lines = path.read_text("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise UsersError(f"{path}: cannot read it ({err})") from None
    lines = [x for x in lines if x.partition(":")[0] != name]
    lines.append(f"{name}:{_hasher().hash(password)}")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
    except OSError as err:
        raise UsersError(f"{path}: cannot write it ({err.strerror or err})") from None
