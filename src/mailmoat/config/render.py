"""The defaults as rows for the settings reference, and as the TOML file that
`mailmoat config defaults` prints (like `postconf -d`, but a file mailmoat can read back)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mailmoat.config.settings import Settings

UNSET = "(unset)"
COMPUTED = "(computed)"
"""Defaults TOML cannot write: no value (None), or one found at start (this host's FQDN)."""


def describe_defaults() -> list[tuple[str, str, str]]:
    """(dotted key, default as TOML text or UNSET/COMPUTED, one-line description) per setting."""
    rows = []
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, f in model.model_fields.items():
            if f.default_factory is not None:
                shown = COMPUTED if name == "hostname" else toml_value(f.default_factory())  # type: ignore[call-arg]
            else:
                shown = UNSET if f.default is None else toml_value(f.default)
            rows.append((f"{section_name}.{name}", shown, f.description or ""))
    return rows


def defaults_toml() -> str:
    """Every setting as a TOML file: one table per section, `key = default  # description`.
    A default TOML cannot write is a commented-out line, so reading the file back gives the
    defaults again."""
    lines: list[str] = []
    section = ""
    for key, default, doc in describe_defaults():
        head, name = key.split(".", 1)
        if head != section:
            lines += [""] if section else []
            lines.append(f"[{head}]")
            section = head
        comment = "# " if default in (UNSET, COMPUTED) else ""
        lines.append(f"{comment}{name} = {default}  # {doc}")
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    """A default as a TOML value: booleans, numbers, strings, paths, lists and tables."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return _toml_string(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{_toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"no TOML form for {value!r}")


def _toml_string(text: str) -> str:
    escaped = "".join(
        f"\\{c}" if c in '"\\' else f"\\u{ord(c):04x}" if c < " " or c == "\x7f" else c
        for c in text
    )
    return f'"{escaped}"'
