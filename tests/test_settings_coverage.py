"""Every setting of the settings model is exercised by some test.

A setting counts as tested when a test file (other than this one) names it:
* as its dotted key, "smtp.vrfy_reply" (how config.load overrides and most tests spell it), or
* as a key of its section in the same file: the section written as a quoted key ("smtp") or its
  model class named (SmtpSettings), and the setting as a quoted key ("vrfy_reply":) or keyword
  argument (vrfy_reply=), or
* in COVERED_BY: a named test that reaches it another way (a fixture's keyword arguments); the
  named test must exist.
A new setting without any of these fails here: write the test that shows its effect.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest
from pydantic import BaseModel

from mailmoat import config

TESTS = Path(__file__).resolve().parent

COVERED_BY: dict[str, str] = {
    # the relay tests' make_settings(port, **relay) fixture takes the relay section's keys
    "relay.tls_verify": "tests/relay/test_smtp_client.py"
    "::test_starttls_opportunistic_without_verification",
}

EXEMPT: dict[str, str] = {
    # Only settings that cannot be shown to work on this machine go here, each with why.
}


def all_settings() -> list[tuple[str, str, type[BaseModel]]]:
    out = []
    for section, field in config.Settings.model_fields.items():
        model = field.annotation
        assert isinstance(model, type) and issubclass(model, BaseModel)
        out += [(section, name, model) for name in model.model_fields]
    return out


@cache
def _test_texts() -> dict[Path, str]:
    return {
        p: p.read_text() for p in TESTS.rglob("*.py") if p.resolve() != Path(__file__).resolve()
    }


@cache
def _section_texts(section: str, model_name: str) -> tuple[str, ...]:
    """The test files that name the section: as a quoted key or by its model class."""
    sect = re.compile(rf"[\"']{re.escape(section)}[\"']|\b{model_name}\b")
    return tuple(text for text in _test_texts().values() if sect.search(text))


def mentioned(section: str, name: str, model: type[BaseModel]) -> bool:
    dotted = f"{section}.{name}"
    if any(dotted in text for text in _test_texts().values()):
        return True
    key = re.compile(rf"[\"']{re.escape(name)}[\"']\s*:|\b{re.escape(name)}\s*=(?!=)")
    return any(
        name in text and key.search(text) for text in _section_texts(section, model.__name__)
    )


def test_every_setting_is_named_by_a_test() -> None:
    missing = [
        f"{section}.{name}"
        for section, name, model in all_settings()
        if f"{section}.{name}" not in EXEMPT
        and f"{section}.{name}" not in COVERED_BY
        and not mentioned(section, name, model)
    ]
    assert missing == [], "settings no test exercises: " + ", ".join(missing)


@pytest.mark.parametrize("key", sorted(COVERED_BY))
def test_named_covering_tests_exist(key: str) -> None:
    path, _, test = COVERED_BY[key].partition("::")
    text = (TESTS.parent / path).read_text()
    assert re.search(rf"^(async )?def {re.escape(test)}\(", text, re.M), COVERED_BY[key]
    assert key.split(".", 1)[1] in text


def test_exemptions_and_coverage_name_real_settings() -> None:
    real = {f"{s}.{n}" for s, n, _ in all_settings()}
    assert set(EXEMPT) <= real and set(COVERED_BY) <= real
    assert all(reason.strip() for reason in EXEMPT.values())


def test_the_walker_notices_a_setting_no_test_names() -> None:
    """The check above can fail: a name no test file holds is reported as missing."""
    assert not mentioned("smtp", "surely_no_such_setting", config.SmtpSettings)
    assert mentioned("smtp", "vrfy_reply", config.SmtpSettings)
