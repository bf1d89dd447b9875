"""The defaults as rows for `mailmoat config defaults` and the settings reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from mailmoat.config.settings import Settings


def describe_defaults() -> list[tuple[str, str, str]]:
    """(dotted key, default as TOML-ish text, one-line description) for every setting."""
    rows = []
    for section_name, section_field in Settings.model_fields.items():
        model = section_field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        for name, f in model.model_fields.items():
            if f.default_factory is not None:
                default: Any = "(computed)" if name == "hostname" else f.default_factory()  # type: ignore[call-arg]
            else:
                default = f.default
            rows.append((f"{section_name}.{name}", _show(default), f.description or ""))
    return rows


def _show(value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        return f'"{value}"'
    if isinstance(value, str):
        return value if value == "(computed)" else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_show(k)} = {_show(v)}" for k, v in value.items()) + "}"
    return str(value)
