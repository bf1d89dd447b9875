"""Least privilege: bind the listeners as root, then become `server.user`.

The supervisor (or the one process) drops privileges right after binding, before it reads
a directory, opens a Maildir, starts the admin listener or spawns a worker, so everything
after the bind runs unprivileged and the workers inherit the identity. Supplementary groups
are cleared and the change is checked: a process that could still regain root refuses to go
on.
"""

from __future__ import annotations

import grp
import os
import pwd
from dataclasses import dataclass

ROOT_WARNING = (
    "running as root: set server.user (and server.group) to drop privileges once the"
    " listeners are bound"
)


class PrivilegeError(Exception):
    """The configured identity cannot be taken; the message is one line for the admin."""


@dataclass(frozen=True)
class Identity:
    user: str
    uid: int
    gid: int


def identity(user: str, group: str = "") -> Identity | None:
    """The identity `server.user`/`server.group` name, or None when no user is set."""
    if not user:
        if group:
            raise PrivilegeError("server.group needs server.user")
        return None
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"server.user: no such user {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"server.group: no such group {group!r}") from None
    if entry.pw_uid == 0:
        raise PrivilegeError(f"server.user: {user!r} is root; name an unprivileged user")
    return Identity(user, entry.pw_uid, gid)


def drop(user: str, group: str = "") -> Identity | None:
    """Become `user` (and `group`) for good; the identity taken, None when none is set."""
    who = identity(user, group)
    if who is None:
        return None
    if os.geteuid() != 0:
        if os.getuid() == who.uid and os.getgid() == who.gid:
            return who  # started as that identity already (systemd's User=, for one)
        raise PrivilegeError(f"server.user: switching to {who.user!r} needs root")
    os.setgroups([])
    os.setgid(who.gid)
    os.setuid(who.uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:
        raise PrivilegeError("privileges could be regained after dropping them; not going on")
    return who
