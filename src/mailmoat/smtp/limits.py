"""What the engine may hold and allow, as one small value the caller builds.

The engine has no defaults of its own: every field is required, and the caller fills them
from its settings (mailmoat's `[smtp]` section, mapped in `mailmoat.engine_limits`), so each
default is written once, next to the setting that documents it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Octet lengths count CRLF where RFC 5321 does (command and text lines)."""

    max_command_line: int
    max_path: int
    max_local_part: int
    max_domain: int
    max_text_line: int
    max_recipients: int
    """Recipients per transaction; more get 452 4.5.3."""
    max_message_size: int
    """Advertised with SIZE; a larger message is refused at MAIL (SIZE=) or at its end."""
    max_unknown_commands: int
    max_errors: int
    max_junk_commands: int
    """NOOP, RSET, VRFY, EXPN and HELP per session before 421."""
    bare_line_endings: Literal["reject", "normalise"]
    """Bare CR or LF in message data: refuse the message, or rewrite it as CRLF."""
    pipelining: bool
    smtputf8: bool
    eightbitmime: bool
