"""The one settings model. Every setting has a safe default and one line of documentation here.

`mailmoat config defaults` prints them all from this package; nothing else documents a default.
The sections live in modules by group (`server`, `admission`, `delivery`, `dnschecks`), the whole
model and its loading in `settings`, the listing of defaults in `render`; this module is the
interface: `from mailmoat.config import Settings, load, ...`.

Adding a setting: one `Field(default=..., description="one line")` with its bounds in its
section's class; a constructor that tests call without settings takes the default with
`default_of(Section, "name")`, never a literal; a test shows its effect (tests/
test_settings_coverage.py fails until one names it); then `scripts/sync-docs`.
A new section is a `Section` subclass plus one field of `Settings`; a check's own section is
declared beside the check instead, with `@own_section` (`config/sections.py`), and this package
is not edited. A fixed number that no administrator would tune goes to `mailmoat.limits`.
"""

from mailmoat.config.admission import (
    AdmissionSettings,
    BanSettings,
    PregreetSettings,
    StoreSettings,
    StressSettings,
    TarpitSettings,
)
from mailmoat.config.base import Action, KiB, MiB, default_of, dns_server, split_endpoint
from mailmoat.config.delivery import (
    CallAheadSettings,
    DirectorySettings,
    DirectorySource,
    DomainSettings,
    HarvestSettings,
    LdapSettings,
    MaildirSettings,
    RelaySettings,
)
from mailmoat.config.dnschecks import (
    AuthSettings,
    DkimSettings,
    DmarcSettings,
    DnsblSettings,
    DnsSettings,
    FcrdnsSettings,
    HeloSettings,
    ScoreSettings,
    SpfSettings,
)
from mailmoat.config.integrated import PolicySettings
from mailmoat.config.milter import MilterSettings
from mailmoat.config.packetfilter import PacketFilterSettings
from mailmoat.config.render import defaults_toml, describe_defaults
from mailmoat.config.server import (
    AdminSettings,
    LogSettings,
    ServerSettings,
    SmtpSettings,
    TimeoutSettings,
)
from mailmoat.config.settings import ConfigError, Settings, build, load

__all__ = [
    "Action",
    "AdminSettings",
    "AdmissionSettings",
    "AuthSettings",
    "BanSettings",
    "CallAheadSettings",
    "ConfigError",
    "DirectorySettings",
    "DirectorySource",
    "DkimSettings",
    "DmarcSettings",
    "DnsSettings",
    "DnsblSettings",
    "DomainSettings",
    "FcrdnsSettings",
    "HarvestSettings",
    "HeloSettings",
    "KiB",
    "LdapSettings",
    "LogSettings",
    "MaildirSettings",
    "MiB",
    "MilterSettings",
    "PacketFilterSettings",
    "PolicySettings",
    "PregreetSettings",
    "RelaySettings",
    "ScoreSettings",
    "ServerSettings",
    "Settings",
    "SmtpSettings",
    "SpfSettings",
    "StoreSettings",
    "StressSettings",
    "TarpitSettings",
    "TimeoutSettings",
    "build",
    "default_of",
    "defaults_toml",
    "describe_defaults",
    "dns_server",
    "load",
    "split_endpoint",
]
