"""The parameters of the ssh.* checks (`checks.ssh` re-exports them), and the size helpers
of ssh.file_sizes.  Every check names a `host` and the `user` (account) to log in as."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ._expect import OutputExpectation
from ._ssh_script import name_problem

if TYPE_CHECKING:
    from engine.context import Context

__all__ = ["SshTarget", "SshCommand", "KaraboCheck", "Process", "LogGrep", "FileSizes",
           "ServiceRunFile", "parse_size", "human_size"]


class SshTarget(BaseModel):
    """Where an ssh.* check runs; the base of every ssh.* check's parameters (`with:`)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1)
    user: str | None = Field(default=None, min_length=1)
    timeout: float | None = Field(default=None, gt=0, description="seconds; default: site's")

    @field_validator("host", "user")
    @classmethod
    def _plain_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        why = name_problem("host" if info.field_name == "host" else "account", value) \
            if value is not None else None
        if why:
            raise ValueError(why)
        return value

    @classmethod
    def prefetch(cls, targets: list[SshTarget], ctx: Context) -> None:
        """Start opening the connections that checks with these parameters will need; the
        walker calls this at the start of a walk with the targets its steps name."""
        from . import _ssh

        _ssh.prefetch(ctx, [(t.user, t.host) for t in targets])


def _regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(f"bad regular expression {value!r}: {exc}") from exc
    return value

class SshCommand(SshTarget, OutputExpectation):
    """A command as an argument list, and what its exit status and output must be."""

    argv: list[str] = Field(min_length=1)
    cwd: str | None = None

class KaraboCheck(SshTarget):
    """`source <karabo_root>/activate; karabo-check` (11.1, 11.2, 11.3).

    `servers`: names or globs that must be up; `down`: names or globs that must not be up
    (e.g. no calibration servers on the exflonc hosts, 11.2); `started`: whether the
    installation's supervisor must run (True), must not (False), or either (None).
    """

    karabo_root: str | None = Field(default=None, description="default /scratch/<user>/karabo")
    servers: list[str] = Field(default_factory=list)
    down: list[str] = Field(default_factory=list)
    started: bool | None = True
    min_uptime: int = Field(default=0, ge=0, description="seconds; catches restart loops")

class Process(SshTarget):
    """`ps aux | grep <pattern>` without the grep: `pattern` is a regex on the command line."""

    pattern: str = Field(min_length=1)
    owner: str | None = None
    present: bool = True
    min_count: int = Field(default=1, ge=1)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        return _regex(value)

class LogGrep(SshTarget):
    """Lines of a log that match `pattern` (11.3: ``grep "Resource temporarily" .../current``),
    optionally among its last `lines` lines; without a pattern, just the last lines."""

    path: str = Field(min_length=1)
    pattern: str | None = Field(default=None, min_length=1)
    regex: bool = False
    ignore_case: bool = False
    lines: int | None = Field(default=None, ge=1)
    expect: Literal["present", "absent"] = "present"
    min_count: int = Field(default=1, ge=1)
    show: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="after")
    def _something(self) -> LogGrep:
        if self.pattern is None and self.lines is None:
            raise ValueError("give a pattern, a number of lines, or both")
        if self.pattern is not None and self.regex:
            _regex(self.pattern)
        return self

_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(value: int | str) -> int:
    """Bytes from 1234, "1234", "500M" or "1.5G" (powers of 1024, as `ls -h`)."""
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not m:
        raise ValueError(f"not a size: {value!r} (e.g. 1048576, 500M, 1.5G)")
    return int(float(m[1]) * _UNITS[m[2].upper()])


def human_size(n: int) -> str:
    """As `ls -h` prints it (1.5G); plain bytes below 1K."""
    if n < 1024:
        return str(n)
    value = float(n)
    for unit in ("K", "M", "G", "T"):
        value /= 1024
        if value < 1024 or unit == "T":
            break
    return f"{value:.1f}{unit}"

class FileSizes(SshTarget):
    """The files of a run folder and their sizes (10.1: ``ll -alh .../raw/<run>``)."""

    path: str = Field(pattern=r"^/", description="an absolute folder path")
    glob: str = "*"
    min_count: int = Field(default=1, ge=0)
    min_total: int | None = None
    min_file_size: int | None = Field(default=None, description="every file at least")

    @field_validator("min_total", "min_file_size", mode="before")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        return None if value is None else parse_size(value)

class ServiceRunFile(SshTarget):
    """A daemontools run file (11.1 webserver `--filter`/`--port`, 11.2 CUDA on PATH).

    `path` is the run file, or `service` names it under `<karabo_root>/var/service/`.
    `covers`: servers the webserver's filter must act on; `covers_all`: every other service
    of the installation, except those matching an `omit` expression (the RESTART device's
    *Omit from restart*); `cuda`: PATH must (True) or must not (False) hold a CUDA folder
    that exists on the host.
    """

    path: str | None = None
    service: str | None = None
    karabo_root: str | None = None
    covers: list[str] = Field(default_factory=list)
    covers_all: bool = False
    omit: list[str] = Field(default_factory=list)
    cuda: bool | None = None
    port: int | None = None
    server_id: str | None = None
    program: str | None = None

    @model_validator(mode="after")
    def _which_file(self) -> ServiceRunFile:
        if (self.path is None) == (self.service is None):
            raise ValueError("give either path or service")
        for expression in self.omit:
            _regex(expression)
        return self

    def run_file(self) -> str:
        if self.path is not None:
            return self.path
        root = self.karabo_root or f"/scratch/{self.user}/karabo"
        return f"{root}/var/service/{self.service}/run"
