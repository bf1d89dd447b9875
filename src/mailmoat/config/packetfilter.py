"""Settings of the packet-filter layer: bans and floods dropped in the kernel (nftables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mailmoat.config.base import Section


class PacketFilterSettings(Section):
    backend: Literal["none", "nftables"] = Field(
        default="none",
        description="Drop banned addresses' new connections in the kernel (nftables: a table of mailmoat's own; none: mailmoat refuses them itself).",
    )
    table: str = Field(
        default="mailmoat",
        pattern=r"^[A-Za-z][A-Za-z0-9_]{0,31}$",
        description="Name of mailmoat's own nftables table (inet family); nothing outside it is touched.",
    )
    keep_at_stop: bool = Field(
        default=False,
        description="Leave the table and its bans in the kernel when mailmoat stops (default: delete it).",
    )
    rate_meter: bool = Field(
        default=False,
        description="Also drop new connections above admission.max_rate per source in the kernel (a per-address meter).",
    )
