"""Checks on the DAQ (guidelines 10.1, 10.2): what it wrote, and what reaches the pipeline.

- `daq.run_files`: a run folder opened with EXtra-data, as users open it, on this machine.
  ok when the run opens and holds what the runbook expects (trains, sources, bytes).  A
  folder that cannot be read (permissions, not a folder, I/O errors) is `unknown`; a folder
  that is missing, empty, or whose files EXtra-data cannot use is a `fail`, because that is
  what the DAQ left behind.  Files that are not HDF5 at all are set aside before EXtra-data
  sees them (it would print about them) and listed as unusable.
- `daq.last_run` (10.1#1): the file sizes of the last run, over SSH on the SASE's
  online-cluster server; which run is the last is found there, not given.
- `daq.aggregator_state` (10.1#4): a data aggregator is not in an error state.
- `daq.min_modules` (10.2#5): the APPENDERs' min-modules against the modules that send.

A host or broker that cannot be reached is `unknown` with the reason, never ok or fail.
"""

from __future__ import annotations

import fnmatch
import os
import shlex
import string
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from engine.context import Context
from engine.registry import check
from engine.result import Result

from ._ssh_params import SshTarget, human_size, parse_size

__all__ = ["RunFiles", "LastRun", "AggregatorState", "MinModules", "run_files", "last_run",
           "aggregator_state", "min_modules"]

_SHOWN = 12


class RunFiles(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, description="the run folder, e.g. .../raw/r0039")
    min_trains: int | None = Field(default=None, ge=0)
    sources: list[str] = Field(default_factory=list, description="glob patterns; each must "
                               "match at least one source, e.g. 'SPB_DET_AGIPD1M-1/DET/*'")
    min_bytes: int | None = Field(default=None, ge=0, description="total size of the files")


def _usable(unusable: list[str]) -> Any:
    """A file filter for EXtra-data that keeps only files with an HDF5 signature."""
    import h5py

    def keep(paths: list[str]) -> list[str]:
        kept = []
        for path in paths:
            try:
                good = bool(h5py.is_hdf5(path))
            except OSError:
                good = False
            if good:
                kept.append(path)
            else:
                unusable.append(os.path.basename(path))
        return kept
    return keep


@check("daq.run_files")
def run_files(p: RunFiles, ctx: Context) -> Result:
    folder = Path(os.path.expanduser(p.path))
    try:
        names = sorted(e.name for e in os.scandir(folder)
                       if e.name.endswith(".h5") and e.is_file())
    except FileNotFoundError:
        return Result.fail(f"{folder}: no such run folder", files=0, trains=0, bytes=0)
    except OSError as exc:
        return Result.unknown(f"{folder}: cannot read the run folder: "
                              f"{exc.strerror or exc}")
    if not names:
        return Result.fail(f"{folder}: no HDF5 files in the run folder", files=0, trains=0,
                           bytes=0)
    import extra_data

    unusable: list[str] = []
    try:
        run = extra_data.RunDirectory(str(folder), file_filter=_usable(unusable),
                                      parallelize=False)
    except FileNotFoundError:
        return Result.fail(f"{folder}: none of the {len(names)} files is usable HDF5 "
                           f"({', '.join(unusable[:_SHOWN])})", files=0, trains=0, bytes=0,
                           unusable=unusable)
    except PermissionError as exc:
        return Result.unknown(f"{folder}: cannot read the run files: {exc}")
    except Exception as exc:  # noqa: BLE001 - EXtra-data raises a bare Exception for unusable files
        return Result.fail(f"{folder}: EXtra-data cannot open the run: {exc}", files=0,
                           trains=0, bytes=0, unusable=unusable)
    with run:
        paths = [f.filename for f in run.files]
        train_ids = [int(t) for t in run.train_ids]
        sources = sorted(run.all_sources)
    size = sum(os.path.getsize(path) for path in paths)
    observed: dict[str, Any] = {
        "files": len(paths), "bytes": size, "trains": len(train_ids),
        "first_train": train_ids[0] if train_ids else None,
        "last_train": train_ids[-1] if train_ids else None,
        "sources": sources, "unusable": unusable}
    problems = []
    if p.min_trains is not None and len(train_ids) < p.min_trains:
        problems.append(f"{len(train_ids)} trains, expected at least {p.min_trains}")
    for pattern in p.sources:
        if not fnmatch.filter(sources, pattern):
            problems.append(f"no source matches {pattern!r}")
    if p.min_bytes is not None and size < p.min_bytes:
        problems.append(f"{size} bytes, expected at least {p.min_bytes}")
    shown = ", ".join(sources[:_SHOWN]) + (" ..." if len(sources) > _SHOWN else "")
    evidence = (f"{folder}: {len(paths)} files, {size} bytes, {len(train_ids)} trains"
                + (f" ({train_ids[0]}..{train_ids[-1]})" if train_ids else "")
                + f"; sources: {shown or 'none'}"
                + (f"; unusable: {', '.join(unusable[:_SHOWN])}" if unusable else ""))
    if problems:
        return Result.fail(f"{evidence}\n" + "; ".join(problems), problems=problems,
                           **observed)
    return Result.ok(evidence, **observed)


# ---- daq.last_run (10.1#1) ------------------------------------------------------------------

_GLOBS = {"cycle": "[0-9][0-9][0-9][0-9][0-9][0-9]", "proposal": "p[0-9]*"}
_NONE = "@@runbook: no run folder@@"
_NEWEST = "-printf '%T@ %p\\n' | sort -k1,1n -k2 | tail -n 1 | cut -d' ' -f2-"


class LastRun(SshTarget):
    """The files of the last run, as ``ll -alh .../raw/<run>`` on the online-cluster server.

    `raw_path` is the site's pattern (``/gpfs/exfel/exp/{instrument}/{cycle}/{proposal}/raw/
    {run}``, where `{proposal}` and `{run}` are folder names like p900001 and r0007).  What
    is not given is found on the host: the newest ``raw`` folder of the instrument's (or the
    cycle's) proposals, by modification time (a new run folder changes it), then its newest
    run folder, or `run` in it.  Each of `modules` (the detector's karabo_da names, AGIPD00
    ...) must have files, together at least `min_module_size` (a MHz detector writes
    gigabytes).
    """

    raw_path: str = Field(pattern=r"^/.*/\{run\}$", description="the site's raw_path")
    instrument: str = Field(pattern=r"^[A-Z]{3}$")
    cycle: str | None = Field(default=None, pattern=r"^(\d{6})?$")
    proposal: str | int | None = None
    run: int | None = Field(default=None, ge=0, le=9999)
    modules: list[str] = Field(default_factory=list)
    min_module_size: int | None = None
    min_count: int = Field(default=1, ge=0)

    @field_validator("min_module_size", mode="before")
    @classmethod
    def _size(cls, value: int | str | None) -> int | None:
        return None if value is None or value == "" else parse_size(value)

    @field_validator("proposal", mode="before")
    @classmethod
    def _proposal(cls, value: str | int | None) -> str | None:
        text = str(value if value is not None else "").strip()
        if not text:
            return None
        if text.isdigit():
            return f"p{int(text):06d}"
        if not (text[0] == "p" and text[1:].isdigit()):
            raise ValueError(f"a proposal is 900001 or p900001, not {text!r}")
        return text

    def parent(self) -> tuple[str, str]:
        """The runs' folder as one shell word (values quoted, globs not), and as shown."""
        values = {"instrument": self.instrument, "cycle": self.cycle or None,
                  "proposal": self.proposal}
        word, shown = [], []
        for literal, name, _spec, _conv in string.Formatter().parse(self.raw_path[:-6]):
            word.append(shlex.quote(literal) if literal else "")
            shown.append(literal)
            if name is None:
                continue
            if name not in values:
                raise ValueError(f"raw_path {self.raw_path!r} has {{{name}}}, which this "
                                 "check cannot fill")
            value = values[name]
            word.append(shlex.quote(str(value)) if value else _GLOBS[name])
            shown.append(str(value) if value else "*")
        return "".join(word), "".join(shown)


def _last_run_script(parent: str, run: int | None) -> str:
    pick = (f'd="$raw"/{shlex.quote(f"r{run:04d}")}' if run is not None else
            f"d=$(find \"$raw\" -mindepth 1 -maxdepth 1 -type d -name 'r[0-9]*' {_NEWEST})")
    return "\n".join([
        f"set -- {parent}",
        f'[ -e "$1" ] && raw=$(find "$@" -maxdepth 0 -type d {_NEWEST}) && [ -n "$raw" ] '
        f"|| {{ echo {shlex.quote(_NONE)}; exit 0; }}",
        pick,
        'printf "%s\\n%s\\n" "$raw" "$d"',
        'if [ -n "$d" ] && [ -d "$d" ]; then echo yes; else echo no; exit 0; fi',
        '[ -r "$d" ] && [ -x "$d" ] || { echo "$d: permission denied" >&2; exit 4; }',
        "exec find \"$d\" -mindepth 1 -maxdepth 1 -type f -printf '%s %f\\n'",
    ])


@check("daq.last_run")
def last_run(p: LastRun, ctx: Context) -> Result:
    """ok when the last run's folder holds files, of every module, big enough (10.1#1)."""
    who = f"{p.user}@{p.host}" if p.user else p.host
    try:
        parent, shown = p.parent()
    except ValueError as exc:
        return Result.unknown(str(exc))
    from . import _ssh

    pool = _ssh.pool_for(ctx)
    limit = min(p.timeout or pool.settings.command_timeout, ctx.timeout * 0.9)
    try:
        got = pool.run(p.host, p.user, _last_run_script(parent, p.run), limit,
                       read_only=True)
    except _ssh.SshError as exc:
        return Result.unknown(str(exc), evidence=f"{who}$ ls -alh {shown}/")
    lines = got.stdout.splitlines()
    if got.exit != 0 or not lines or (lines[0] != _NONE and len(lines) < 3):
        return Result.unknown(f"listing the last run under {shown} failed (exit {got.exit})"
                              + (f": {got.stderr.strip()[-300:]}" if got.stderr.strip() else ""))
    empty: dict[str, Any] = {"run": None, "exists": False, "files": {}, "total": 0}
    if lines[0] == _NONE:
        return Result.fail(f"{who}$ ls -d {shown}/r*\nno run folder: nothing matches",
                           **empty)
    raw, folder, exists = lines[0], lines[1], lines[2] == "yes"
    if not exists:
        what = f"{folder} does not exist" if folder else f"{raw} holds no run folder"
        return Result.fail(f"{who}$ ls -alh {folder or raw}\n{what}",
                           **{**empty, "run": folder or None})
    files = dict(sorted((name, int(size)) for size, _, name in
                        (line.partition(" ") for line in lines[3:] if line)))
    total = sum(files.values())
    listing = "".join(f"\n{human_size(size):>8}  {name}"
                      for name, size in list(files.items())[:4 * _SHOWN])
    evidence = (f"{who}$ ls -alh {folder}\n{len(files)} file(s), {human_size(total)} in "
                f"total{listing}")
    modules = {m: sum(size for name, size in files.items() if f"-{m}-" in name)
               for m in p.modules}
    problems = []
    if len(files) < p.min_count:
        problems.append(f"{len(files)} file(s), expected at least {p.min_count}")
    missing = [m for m, size in modules.items() if size == 0]
    if files and missing:
        problems.append(f"no files of {len(missing)} module(s): {', '.join(missing)}")
    if p.min_module_size is not None:
        small = [f"{m} {human_size(size)}" for m, size in modules.items()
                 if 0 < size < p.min_module_size]
        if small:
            problems.append(f"less than {human_size(p.min_module_size)} of "
                            f"{len(small)} module(s): {', '.join(small[:_SHOWN])}")
    observed: dict[str, Any] = {"run": folder, "exists": True, "files": files,
                                "total": total, "modules": modules}
    if problems:
        return Result.fail(f"{evidence}\n" + "; ".join(problems), problems=problems,
                           **observed)
    return Result.ok(evidence, **observed)


# ---- Karabo: daq.aggregator_state (10.1#4), daq.min_modules (10.2#5) -------------------------

def _karabo(ctx: Context) -> tuple[Any, float]:
    from ._karabo import call_timeout, client_for

    return client_for(ctx), call_timeout(ctx)


class AggregatorState(BaseModel):
    """A data aggregator (or any device) must not be in one of `error_states`."""

    model_config = ConfigDict(extra="forbid")

    device: str = Field(min_length=1)
    error_states: list[str] = Field(default_factory=lambda: ["ERROR"], min_length=1)


@check("daq.aggregator_state")
def aggregator_state(p: AggregatorState, ctx: Context) -> Result:
    """fail when the device is in an error state (its status tells why)."""
    client, timeout = _karabo(ctx)
    got = client.get(p.device, ["state", "status"], timeout)
    state, status = str(got.get("state")), str(got.get("status") or "")
    evidence = f"{p.device} is {state}" + (f" ({status})" if status else "")
    if state in p.error_states:
        return Result.fail(evidence, state=state, status=status)
    return Result.ok(evidence, state=state, status=status)


class MinModules(BaseModel):
    """Each APPENDER's min-modules against the modules that reach it and, when `detector`
    is given, the detector's modules less those it lists as not sending."""

    model_config = ConfigDict(extra="forbid")

    appenders: list[str] = Field(min_length=1)
    detector: str | None = None
    min_property: str = "minModules"
    received_property: str = "modulesReceived"
    modules_property: str = "modules"
    not_sending_property: str = "modulesNotSending"


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@check("daq.min_modules")
def min_modules(p: MinModules, ctx: Context) -> Result:
    """fail when an APPENDER waits for more modules than send (10.2#5)."""
    from engine.errors import RunbookError

    client, timeout = _karabo(ctx)
    lines, problems, observed = [], [], {}
    sending = None
    if p.detector:
        try:
            det = client.get(p.detector, [p.modules_property, p.not_sending_property], timeout)
        except RunbookError as exc:
            lines.append(f"{p.detector}: modules not readable ({exc})")
        else:
            total, quiet = _int(det.get(p.modules_property)), det.get(p.not_sending_property)
            if total is not None and isinstance(quiet, list):
                sending = total - len(set(quiet))
                lines.append(f"{p.detector}: {sending} of {total} modules send"
                             + (f" (not sending: {', '.join(map(str, sorted(quiet)))})"
                                if quiet else ""))
                observed["detector"] = {"modules": total, "not_sending": sorted(quiet)}
    first_bad = None
    for device in p.appenders:
        got = client.get(device, [p.min_property, p.received_property], timeout)
        wanted, received = _int(got.get(p.min_property)), _int(got.get(p.received_property))
        if wanted is None or received is None:
            return Result.unknown(f"{device}: {p.min_property} or {p.received_property} is "
                                  f"not a number: {got!r}")
        observed[device] = {"min_modules": wanted, "received": received}
        lines.append(f"{device}: {p.min_property} = {wanted}, {p.received_property} = "
                     f"{received}")
        short = []
        if 0 < received < wanted:
            short.append(f"{received} modules arrive")
        if sending is not None and sending < wanted:
            short.append(f"{sending} modules of the detector send")
        if short:
            problems.append(f"{device} waits for {wanted} modules, but "
                            + " and ".join(short))
            first_bad = first_bad or device
    result = (Result.fail("\n".join(lines) + "\n" + "; ".join(problems), **observed)
              if problems else Result.ok("\n".join(lines), **observed))
    result.subject = first_bad or p.appenders[0]
    return result
