"""Who the valid recipients are: a static file, LDAP, or call-ahead to the internal server,
chosen per domain (`[directory]` settings), behind one interface (`Directories`)."""

from __future__ import annotations

from mailmoat.config import Settings
from mailmoat.directory.base import (
    AddressSet,
    Directories,
    Directory,
    LookupResult,
    ResultCache,
    Status,
    split_address,
)
from mailmoat.store.base import Store

__all__ = [
    "AddressSet",
    "Directories",
    "Directory",
    "LookupResult",
    "ResultCache",
    "Status",
    "build_directories",
    "split_address",
]


def build_directories(settings: Settings, store: Store) -> Directories | None:
    """The directories the settings ask for, one of each kind at most; None when no local
    domain has one (every address in the local domains is accepted, as without this module)."""
    d = settings.directory
    made: dict[str, Directory] = {}
    by_domain: dict[str, Directory] = {}
    for domain in settings.domains.local:
        kind = settings.directory_for(domain)
        if kind == "none":
            continue
        if kind not in made:
            if kind == "static":
                from mailmoat.directory.static import StaticDirectory

                assert d.static_file is not None
                made[kind] = StaticDirectory(d.static_file, d.static_check_interval, d.max_entries)
            elif kind == "ldap":
                from mailmoat.directory.ldap import LdapDirectory

                made[kind] = LdapDirectory(settings.ldap, store, d.max_entries)
            else:
                from mailmoat.directory.callahead import CallAheadDirectory

                made[kind] = CallAheadDirectory(settings, store)
        by_domain[domain] = made[kind]
    if not by_domain:
        return None
    return Directories(by_domain, delimiter=d.recipient_delimiter, always_valid=d.always_valid)
