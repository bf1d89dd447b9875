"""Settings of the integrated mode's milter (issue 16)."""

from __future__ import annotations

from pydantic import Field, field_validator

from mailmoat.config.base import Section, check_networks
from mailmoat.config.integrated import clients_field, side_listen


class MilterSettings(Section):
    clients: list[str] = clients_field("milter")
    listen: str = Field(
        default="",
        description="Milter endpoint for Postfix's smtpd_milters or Sendmail's INPUT_MAIL_FILTER: HOST:PORT ([::1]:PORT for IPv6) or a unix socket path (mode 0660); empty = off.",
    )

    _clients = field_validator("clients")(check_networks)
    _listen = field_validator("listen")(side_listen("milter"))
