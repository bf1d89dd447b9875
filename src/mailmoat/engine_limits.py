"""The `[smtp]` settings as the engine's `Limits`: the one place the mapping is written."""

from __future__ import annotations

from mailmoat.config import SmtpSettings
from mailmoat.smtp.limits import Limits


def engine_limits(smtp: SmtpSettings) -> Limits:
    """The engine's limits for these settings (their defaults are the settings')."""
    return Limits(
        max_command_line=smtp.max_command_line,
        max_path=smtp.max_path,
        max_local_part=smtp.max_local_part,
        max_domain=smtp.max_domain,
        max_text_line=smtp.max_text_line,
        max_recipients=smtp.max_recipients,
        max_message_size=smtp.max_message_size,
        max_unknown_commands=smtp.max_unknown_commands,
        max_errors=smtp.max_errors,
        max_junk_commands=smtp.max_junk_commands,
        bare_line_endings=smtp.bare_line_endings,
        pipelining=smtp.pipelining,
        smtputf8=smtp.smtputf8,
        eightbitmime=smtp.eightbitmime,
    )
