"""The schema of a site: pydantic models, frozen, unknown keys forbidden.

Kept apart from the loader so that the models stay plain data; `engine.inventory`
documents the YAML format and builds these from files.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .hosts import MAX_HOSTS, expand_hosts

__all__ = [
    "CaldbSettings",
    "Detector",
    "Devices",
    "Group",
    "HostEntry",
    "Instrument",
    "KaraboEndpoint",
    "KaraboTransport",
    "Site",
    "SmtpTransport",
    "SshTransport",
    "Transport",
    "DETECTOR_TYPES",
]

DETECTOR_TYPES = ("AGIPD", "LPD", "DSSC", "JUNGFRAU", "ePix100", "pnCCD", "FastCCD")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_MAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Noted(_Model):
    """`assumed` lists the keys (dotted, relative to this object) whose values are not
    taken from the guidelines; `note` says why. The loader checks that each one exists."""

    assumed: list[str] = Field(default_factory=list)
    note: str = ""


def _check_pattern(pattern: str) -> str:
    expand_hosts(pattern)
    return pattern


def _check_mail(address: str) -> str:
    if not _MAIL.match(address):
        raise ValueError(f"'{address}' is not a mail address")
    return address


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"'{name}' is not a plain name (letters, digits, '_', '.', '-')")
    return name


Pattern = Annotated[str, AfterValidator(_check_pattern)]
Mail = Annotated[str, AfterValidator(_check_mail)]
Name = Annotated[str, AfterValidator(_check_name)]
Vars = dict[str, Any]


def _check_path(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("a path cannot hold a NUL byte")
    return value


Path_ = Annotated[str | None, AfterValidator(_check_path)]


class SshTransport(_Model):
    """Paths are resolved against the folder of the file that set them (`~` is kept)."""

    config: Path_ = None
    known_hosts: Path_ = None
    identity: Path_ = None
    connect_timeout: Annotated[float, Field(gt=0)] = 10
    command_timeout: Annotated[float, Field(gt=0)] = 60
    concurrency: Annotated[int, Field(ge=1)] = 32


class KaraboTransport(_Model):
    """`broker`, when set, replaces every instrument's broker (one broker for a twin)."""

    broker: str | None = None
    timeout: Annotated[float, Field(gt=0)] = 10


class SmtpTransport(_Model):
    """The mail relay. `host: null` means that this site sends no mail.

    Credentials never sit in a site file, which is committed and shared: `password_env`
    names an environment variable and `password_file` a file that hold the password, and
    both are read only when a message is sent (`engine.notify`). A `password:` key is
    refused with a message saying so.
    """

    host: str | None = None
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    security: Literal["plain", "starttls", "ssl"] = "starttls"
    sender: Mail = "det-support@xfel.eu"
    timeout: Annotated[float, Field(gt=0)] = 10
    user: str | None = None
    password_env: str | None = None
    password_file: Path_ = None
    cafile: Path_ = None
    password: None = Field(default=None, exclude=True, repr=False)

    @field_validator("password", mode="before")
    @classmethod
    def _no_password(cls, value: Any) -> None:
        raise ValueError("a password is never written into a site file: name an "
                         "environment variable with password_env, or a file with "
                         "password_file")

    @model_validator(mode="after")
    def _credentials(self) -> SmtpTransport:
        if self.password_env and self.password_file:
            raise ValueError("password_env and password_file both set: choose one")
        if self.user is None and (self.password_env or self.password_file):
            raise ValueError("password_env or password_file is set without user")
        if self.user is not None and not (self.password_env or self.password_file):
            raise ValueError(f"user '{self.user}' needs password_env or password_file")
        return self


CaldbSettings = dict[str, Any]


class Transport(_Model):
    ssh: SshTransport = SshTransport()
    karabo: KaraboTransport = KaraboTransport()
    caldb: CaldbSettings = Field(default_factory=dict)
    smtp: SmtpTransport = SmtpTransport()


class HostEntry(_Noted):
    vars: Vars = Field(default_factory=dict)


class Group(_Noted):
    """`hosts` holds patterns as written; after validation it holds the expanded names."""

    hosts: list[Pattern]
    vars: Vars = Field(default_factory=dict)

    @field_validator("hosts", mode="after")
    @classmethod
    def _expand(cls, patterns: list[str]) -> list[str]:
        names: list[str] = []
        for pattern in patterns:
            names.extend(expand_hosts(pattern))
            if len(names) > MAX_HOSTS:
                raise ValueError(f"the group stands for more than {MAX_HOSTS:,} hosts")
        twice = sorted(n for n, times in Counter(names).items() if times > 1)
        if twice:
            raise ValueError(f"host listed more than once: {', '.join(twice)}")
        if not names:
            raise ValueError("a group needs at least one host")
        return names


class KaraboEndpoint(_Model):
    gui_server: str
    broker: str
    topic: str


class Devices(_Model):
    """Karabo device ids of the online calibration (3.4, 3.6, 11), the DAQ and detector."""

    restart: str | None = None
    init: str | None = None
    cal_manager: str | None = None
    raw_appender: str | None = None
    corrected_appender: str | None = None
    bridge: str | None = None
    detector: str | None = None
    daq_run_controller: str | None = None


class Detector(_Noted):
    type: Literal["AGIPD", "LPD", "DSSC", "JUNGFRAU", "ePix100", "pnCCD", "FastCCD"]
    karabo_id: str
    karabo_da: list[str]
    karabo_da_control: str | None = None
    modules: int = Field(ge=1)
    mhz: bool = False
    db_instance: str | None = None
    db_module: list[str] = Field(default_factory=list)
    cal_prefix: str | None = None

    @model_validator(mode="after")
    def _one_da_per_module(self) -> Detector:
        if len(self.karabo_da) != self.modules:
            raise ValueError(
                f"karabo_da lists {len(self.karabo_da)} aggregators for {self.modules} modules"
            )
        return self


class Instrument(_Noted):
    """One instrument; `name` is its key under `instruments:`, filled in by the loader."""

    name: str
    sase: int = Field(ge=1, le=3)
    karabo: KaraboEndpoint
    devices: Devices = Devices()
    detectors: dict[Name, Detector] = Field(default_factory=dict)
    groups: dict[Name, Group] = Field(default_factory=dict)
    vars: Vars = Field(default_factory=dict)
    mail: list[Mail] = Field(default_factory=list)


class Site(_Noted):
    site: Name
    description: str = ""
    extends: Name | None = None
    transport: Transport = Transport()
    vars: Vars = Field(default_factory=dict)
    hosts: dict[Pattern, HostEntry] = Field(default_factory=dict)
    groups: dict[Name, Group] = Field(default_factory=dict)
    instruments: dict[Name, Instrument] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _name_instruments(cls, data: Any) -> Any:
        """Give each instrument its key as `name`, so an Instrument knows who it is."""
        if not isinstance(data, dict) or not isinstance(data.get("instruments"), dict):
            return data
        named = {}
        for key, body in data["instruments"].items():
            if isinstance(body, dict) and "name" not in body:
                body = {"name": key, **body}
            named[key] = body
        return {**data, "instruments": named}

    @model_validator(mode="after")
    def _unique_names(self) -> Site:
        seen: dict[str, str] = {}
        for key, instrument in self.instruments.items():
            if instrument.name != key:
                raise ValueError(f"instrument '{key}' says its name is '{instrument.name}'")
            if key.casefold() in seen:
                raise ValueError(
                    f"instruments '{seen[key.casefold()]}' and '{key}' differ only in case"
                )
            seen[key.casefold()] = key
        self.host_entries()
        return self

    def host_entries(self) -> dict[str, HostEntry]:
        """`hosts:` with its keys expanded; a name that two keys cover is an error."""
        entries: dict[str, HostEntry] = {}
        origin: dict[str, str] = {}
        for pattern, entry in self.hosts.items():
            for name in expand_hosts(pattern):
                if len(entries) >= MAX_HOSTS:
                    raise ValueError(f"hosts: stands for more than {MAX_HOSTS:,} host names")
                if name in entries:
                    raise ValueError(
                        f"host '{name}' is covered by both '{origin[name]}' and '{pattern}'"
                    )
                entries[name] = entry
                origin[name] = pattern
        return entries
