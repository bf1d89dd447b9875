"""The whole settings model (one section per table of the TOML file) and its loading."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from mailmoat import config_checks
from mailmoat.config.admission import (
    AdmissionSettings,
    BanSettings,
    PregreetSettings,
    StoreSettings,
    StressSettings,
    TarpitSettings,
)
from mailmoat.config.base import Section
from mailmoat.config.console import ConsoleSettings
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
from mailmoat.config.server import (
    AdminSettings,
    LogSettings,
    ServerSettings,
    SmtpSettings,
    TimeoutSettings,
)


class Settings(Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    smtp: SmtpSettings = Field(default_factory=SmtpSettings)
    timeouts: TimeoutSettings = Field(default_factory=TimeoutSettings)
    domains: DomainSettings = Field(default_factory=DomainSettings)
    relay: RelaySettings = Field(default_factory=RelaySettings)
    maildir: MaildirSettings = Field(default_factory=MaildirSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    bans: BanSettings = Field(default_factory=BanSettings)
    tarpit: TarpitSettings = Field(default_factory=TarpitSettings)
    pregreet: PregreetSettings = Field(default_factory=PregreetSettings)
    stress: StressSettings = Field(default_factory=StressSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    packetfilter: PacketFilterSettings = Field(default_factory=PacketFilterSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    directory: DirectorySettings = Field(default_factory=DirectorySettings)
    ldap: LdapSettings = Field(default_factory=LdapSettings)
    callahead: CallAheadSettings = Field(default_factory=CallAheadSettings)
    harvest: HarvestSettings = Field(default_factory=HarvestSettings)
    dns: DnsSettings = Field(default_factory=DnsSettings)
    dnsbl: DnsblSettings = Field(default_factory=DnsblSettings)
    fcrdns: FcrdnsSettings = Field(default_factory=FcrdnsSettings)
    helo: HeloSettings = Field(default_factory=HeloSettings)
    spf: SpfSettings = Field(default_factory=SpfSettings)
    dkim: DkimSettings = Field(default_factory=DkimSettings)
    dmarc: DmarcSettings = Field(default_factory=DmarcSettings)
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    milter: MilterSettings = Field(default_factory=MilterSettings)
    console: ConsoleSettings = Field(default_factory=ConsoleSettings)

    def directory_for(self, domain: str) -> DirectorySource:
        """The directory that vouches for recipients in `domain` (a local domain)."""
        return self.directory.domains.get(domain, self.directory.default)

    @model_validator(mode="after")
    def _something_to_serve(self) -> Settings:
        if not self.server.listen and not self.policy.listen and not self.milter.listen:
            raise ValueError(
                "server.listen is empty and no side service is on (policy.listen,"
                " milter.listen):"
                " there is nothing to serve"
            )
        return self

    @model_validator(mode="after")
    def _directories(self) -> Settings:
        d = self.directory
        local = set(self.domains.local)
        for domain in d.domains:
            if domain not in local:
                raise ValueError(f"directory.domains: {domain!r} is not in domains.local")
        if d.default == "none" and any(s != "none" for s in d.domains.values()):
            missing = sorted(local - set(d.domains))
            if missing:
                raise ValueError(
                    f"directory.domains: local domain(s) {', '.join(missing)} have no directory;"
                    ' list them ("none" accepts any address there) or set directory.default'
                )
        used = {self.directory_for(x) for x in local} if local else set()
        if "static" in used and d.static_file is None:
            raise ValueError("directory.static_file is needed for a static directory")
        if "ldap" in used and (not self.ldap.url or not self.ldap.base):
            raise ValueError("ldap.url and ldap.base are needed for an LDAP directory")
        if "ldap" in used and not _ldap3_installed():
            raise ValueError(
                "an LDAP directory needs the ldap3 package: pip install 'mailmoat[ldap]'"
            )
        if "callahead" in used and not (self.callahead.server or self.relay.downstream):
            raise ValueError("callahead.server or relay.downstream is needed for call-ahead")
        return self


def _ldap3_installed() -> bool:
    """ldap3 is an extra (`mailmoat[ldap]`): only LDAP directories need it."""
    try:
        import ldap3  # noqa: F401
    except ImportError:
        return False
    return True


class ConfigError(Exception):
    """Invalid configuration; `problems` lists (dotted key, reason) pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{k}: {r}" for k, r in problems))


def _problems(err: ValidationError) -> list[tuple[str, str]]:
    return [(".".join(str(p) for p in e["loc"]) or "(top)", e["msg"]) for e in err.errors()]


def build(data: dict[str, Any]) -> Settings:
    try:
        # an explicit [server] table, so a bad default host name is reported under its key
        return Settings.model_validate({"server": {}, **data})
    except ValidationError as err:
        raise ConfigError(_problems(err)) from None


def load(path: Path | None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read a TOML file (optional) and apply dotted-key overrides such as {"relay.pool_size": 5}."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(config_checks.read_config_file(path).decode("utf-8"))
        except OSError as err:
            raise ConfigError([(str(path), err.strerror or str(err))]) from None
        except UnicodeDecodeError:
            raise ConfigError([(str(path), "not UTF-8 text")]) from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError([(str(path), f"not valid TOML: {err}")]) from None
        except RecursionError:
            raise ConfigError([(str(path), "not valid TOML: nested too deeply")]) from None
        except ValueError as err:
            raise ConfigError([(str(path), str(err))]) from None
    for key, value in (overrides or {}).items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError([(key, "cannot override inside a non-table value")])
        node[leaf] = value
    return build(data)
