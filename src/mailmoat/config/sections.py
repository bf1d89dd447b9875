"""Settings sections that a check declares beside its own code (check-local sections).

A check's module writes its section as a `Section` subclass with `@own_section("name")`; the
class becomes the `[name]` table of the settings file, a field of `Settings` like any other:
validated and refused the same way, printed by `mailmoat config defaults`, sent to workers,
compared by a reload. The config package is not edited for it. The check reads its values
with `section_of(settings, TheSettings)`, which mypy types.

A section registers when its module is imported, so whatever loads settings imports the checks
first: `mailmoat.assembly` imports every check, and the command line imports the assembly.
Settings built before that (none in mailmoat) lack the field; `section_of` then gives the
defaults.

The settings reference documents a check-local section on its check's page, in the block that
`scripts/sync-docs` writes after a `<!-- settings: name -->` line (not in configuration.md), so
adding a check leaves the shared pages alone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from pydantic.fields import FieldInfo

from mailmoat.config.base import Section
from mailmoat.config.settings import Settings

S = TypeVar("S", bound=Section)

OWN: dict[str, type[Section]] = {}
"""Section name -> its class, for every check-local section registered so far, in order."""


def own_section(name: str) -> Callable[[type[S]], type[S]]:
    """Class decorator: make `cls` the settings file's `[name]` table. A name already taken by
    another section is refused (a programming error, found at import)."""

    def register(cls: type[S]) -> type[S]:
        if OWN.get(name) is cls:
            return cls  # the module imported again (importlib.reload in a test)
        if name in Settings.model_fields or not name.isidentifier():
            raise ValueError(f"settings section {name!r} exists already or is not a name")
        Settings.model_fields[name] = FieldInfo(annotation=cls, default_factory=cls)
        Settings.model_rebuild(force=True)
        OWN[name] = cls
        return cls

    return register


def section_of(settings: Settings, cls: type[S]) -> S:
    """The values of the check-local section `cls` in `settings` (its defaults when `settings`
    was built before the section registered)."""
    for name, registered in OWN.items():
        if registered is cls:
            value = getattr(settings, name, None)
            return value if isinstance(value, cls) else cls()
    raise KeyError(f"{cls.__name__} is not a registered settings section")
