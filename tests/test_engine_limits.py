"""The `[smtp]` settings reach the engine: every `Limits` field comes from its setting."""

from __future__ import annotations

import dataclasses

from mailmoat.config import SmtpSettings
from mailmoat.engine_limits import engine_limits
from mailmoat.smtp.limits import Limits


def test_every_limit_is_its_setting_not_a_default() -> None:
    """Each engine limit set away from its default arrives as set (a field mapped from the
    wrong setting, or left to a default of the engine's, would show here)."""
    changed = {
        "max_command_line": 1024,
        "max_path": 300,
        "max_local_part": 70,
        "max_text_line": 2000,
        "max_recipients": 7,
        "max_message_size": 12345,
        "max_unknown_commands": 3,
        "max_errors": 4,
        "max_junk_commands": 5,
        "bare_line_endings": "normalise",
        "pipelining": False,
        "smtputf8": False,
        "eightbitmime": False,
    }
    limits = engine_limits(SmtpSettings(**changed))
    assert {name: getattr(limits, name) for name in changed} == changed
    defaults = SmtpSettings()
    for name in changed:
        assert getattr(defaults, name) != changed[name], name
    # max_domain has one allowed value (255); every other field is in `changed`
    assert {f.name for f in dataclasses.fields(Limits)} == {*changed, "max_domain"}
    assert limits.max_domain == defaults.max_domain
