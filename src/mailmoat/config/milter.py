"""Settings of the integrated mode's milter (issue 16)."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat.config.base import Section, split_endpoint


class MilterSettings(Section):
    listen: str = Field(
        default="",
        description="Milter endpoint for Postfix's smtpd_milters or Sendmail's INPUT_MAIL_FILTER: HOST:PORT ([::1]:PORT for IPv6) or a unix socket path (mode 0660); empty = off.",
    )

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v and not v.startswith("/"):
            split_endpoint(v)
        return v
