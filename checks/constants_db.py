"""Section 7: find constant versions by physical device and start date, disable them, and
undo that. The filter is the backend's (Fig. 7.3): a fuzzy physical device and a start-date
window; the dark constants come in triplets (quadruplets for AGIPD), one per module.
"""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.registry import action, check, guard_mutation
from engine.result import Result

if TYPE_CHECKING:
    from caldb.versions import VersionInfo

__all__ = ["VersionFilter", "FlagChange", "QualityFilter", "caldb_versions", "caldb_version_sets",
           "caldb_version_quality", "caldb_disable", "caldb_enable"]

DARK = ["Offset", "Noise", "BadPixelsDark", "ThresholdsDark"]


class VersionFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    physical_device: str = Field(min_length=2, description="fuzzy, as the backend's filter")
    start_from: str = Field(min_length=1, description="ISO 8601; no offset means UTC")
    start_to: str = Field(min_length=1)
    calibrations: list[str] = Field(default_factory=lambda: list(DARK))
    enabled: bool = Field(default=True, description="only deployed and good-quality ones")
    expect: str = Field(default="some", pattern="^(some|none)$",
                        description="ok when some match, or when none does (a verify step)")
    db: str | None = None
    store_root: str | None = None


class FlagChange(VersionFilter):
    why: str = Field(min_length=3, description="kept in the audit log")
    who: str | None = None
    max_versions: int = Field(default=64, ge=1,
                              description="refuse a filter that matches more than this")


def _open(p: VersionFilter, ctx: Context) -> Any:
    """The DB named by the step, else by the site (``transport.caldb.url`` and
    ``store_root``), else caldb's default ($RUNBOOK_CALDB)."""
    from caldb.store import CalDB

    site = (ctx.transport or {}).get("caldb") or {}
    url = _with_connect_timeout(p.db or site.get("url"), ctx.timeout,
                                site.get("connect_timeout"))
    return CalDB.open(url, p.store_root or site.get("store_root"))


def _with_connect_timeout(url: str | None, step_timeout: float,
                          site_timeout: float | None = None) -> str | None:
    """A PostgreSQL URL with a libpq ``connect_timeout`` inside the step's timeout: the
    site's ``transport.caldb.connect_timeout`` when set, never beyond 80 % of the step's.

    Without one, a server that accepts the connection and never answers holds the check's
    thread for minutes: the walker reports the step `unknown` at its timeout, but the
    process cannot exit before the thread does (issue 12).  libpq counts whole seconds, at
    least 2; a URL that sets its own connect_timeout keeps it."""
    if not url or not url.startswith("postgres") or "connect_timeout=" in url:
        return url
    within = step_timeout * 0.8
    seconds = max(2, int(min(float(site_timeout), within) if site_timeout else within))
    return f"{url}{'&' if '?' in url else '?'}connect_timeout={seconds}"


def _find(p: VersionFilter, ctx: Context) -> list[VersionInfo]:
    from caldb._time import parse_time
    start = parse_time(p.start_from, "start_from")
    end = parse_time(p.start_to, "start_to")
    with _open(p, ctx) as db:
        found: list[VersionInfo] = []
        for name in p.calibrations:
            found += db.versions(physical_device=p.physical_device, calibration=name,
                                 start_from=start, start_to=end, only_enabled=p.enabled)
    return sorted(found, key=lambda v: (v.physical_name, v.begin_at, v.calibration))


def _table(versions: list[VersionInfo]) -> str:
    lines = [f"{'id':>6}  {'calibration':<15} {'physical device':<22} {'start date':<25} "
             "deployed good"]
    for v in versions:
        lines.append(f"{v.id:>6}  {v.calibration:<15} {v.physical_name:<22} "
                     f"{v.begin_at.isoformat():<25} {'yes' if v.flg_deployed else 'no':<8} "
                     f"{'yes' if v.flg_good_quality else 'no'}")
    return "\n".join(lines)


def _sets(versions: list[VersionInfo]) -> dict[str, list[str]]:
    """Per module and start date, which constants: a triplet or quadruplet, or less."""
    sets: dict[str, list[str]] = {}
    for v in versions:
        sets.setdefault(f"{v.physical_name} {_iso(v.begin_at)}", []).append(v.calibration)
    return sets


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _caldb_error(exc: Exception) -> Result:
    return Result.unknown(f"the calibration DB could not be asked: {exc}")


@check("caldb.versions")
def caldb_versions(p: VersionFilter, ctx: Context) -> Result:
    from caldb.errors import CalDBError
    try:
        found = _find(p, ctx)
    except CalDBError as exc:
        return _caldb_error(exc)
    what = "enabled " if p.enabled else ""
    observed: dict[str, Any] = {"ids": [v.id for v in found], "sets": _sets(found)}
    if not found:
        evidence = (f"no {what}version of {', '.join(p.calibrations)} for '{p.physical_device}'"
                    f" starting {p.start_from} .. {p.start_to}")
        return (Result.ok(evidence, **observed) if p.expect == "none"
                else Result(outcome="fail", evidence=evidence, observed=observed,
                            reason=f"no {what}version matches"))
    evidence = _table(found)
    if p.expect == "none":
        return Result(outcome="fail", evidence=evidence, observed=observed,
                      reason=f"{len(found)} {what}version(s) still match")
    return Result.ok(evidence, **observed)


_TRIPLET = ("Offset", "Noise", "BadPixelsDark")


@check("caldb.version_sets")
def caldb_version_sets(p: VersionFilter, ctx: Context) -> Result:
    """7.2#4: dark constants come as a triplet per module and start date, a quadruplet
    (with ThresholdsDark) for AGIPD; a set with a member missing hints at a wrong filter."""
    from caldb.errors import CalDBError
    try:
        found = _find(p, ctx)
    except CalDBError as exc:
        return _caldb_error(exc)
    wanted: dict[str, set[str]] = {}
    for v in found:
        need = set(_TRIPLET) | ({"ThresholdsDark"} if v.detector_type.upper().startswith("AGIPD")
                                else set())
        wanted[f"{v.physical_name} {_iso(v.begin_at)}"] = need & set(p.calibrations)
    sets = _sets(found)
    short = {key: sorted(wanted[key] - set(have)) for key, have in sets.items()
             if wanted[key] - set(have)}
    lines = [f"{key}: {', '.join(sorted(have))}" + (f"  (missing {', '.join(short[key])})"
                                                    if key in short else "")
             for key, have in sets.items()]
    if short:
        return Result(outcome="fail", evidence="\n".join(lines), observed={"incomplete": short},
                      reason=f"{len(short)} set(s) without all of their dark constants")
    return Result.ok("\n".join(lines), sets=len(sets))


class QualityFilter(VersionFilter):
    max_nan_fraction: float = Field(default=0.01, ge=0, le=1)


def _degenerate(data: Any, max_nan: float) -> str | None:
    """Why an array cannot be a characterization of real dark data, or None."""
    import numpy as np

    values = np.asarray(data, dtype=np.float64)
    finite = values[np.isfinite(values)]
    nan = 1.0 - finite.size / max(values.size, 1)
    if nan > max_nan:
        return f"{nan:.0%} of the values are NaN or infinite"
    if finite.size > 1 and float(np.ptp(finite)) == 0.0:
        return f"every value is {float(finite[0]):g} (flat: no detector behind these darks)"
    return None


@check("caldb.version_quality")
def caldb_version_quality(p: QualityFilter, ctx: Context) -> Result:
    """7: faulty constants, seen in their data: NaN-filled or flat arrays (a dark taken with
    the detector off, a characterization that failed half-way)."""
    from caldb.errors import CalDBError
    try:
        found = _find(p, ctx)
        with _open(p, ctx) as db:
            faulty = [(v, why) for v in found
                      if (why := _degenerate(db.read(v), p.max_nan_fraction)) is not None]
    except CalDBError as exc:
        return _caldb_error(exc)
    if not faulty:
        return Result.ok(f"{len(found)} version(s) of '{p.physical_device}' look like darks",
                         versions=len(found))
    lines = [f"{v.id:>6} {v.physical_name} {v.calibration} {_iso(v.begin_at)}: {why}"
             for v, why in faulty]
    bad = [v for v, _ in faulty]
    return Result(outcome="fail", evidence="\n".join(lines),
                  observed={"ids": [v.id for v in bad], "sets": _sets(bad)},
                  reason=f"{len(faulty)} version(s) hold data that no dark produces")


def _flag(p: FlagChange, ctx: Context, enable: bool) -> Result:
    from caldb.errors import CalDBError
    guard_mutation(("enable" if enable else "disable") + " calibration constant versions")
    try:
        every = _find(p.model_copy(update={"enabled": False}), ctx)
        found = [v for v in every if (v.flg_deployed and v.flg_good_quality) != enable]
        if len(found) > p.max_versions:
            return Result(outcome="fail", evidence=_table(found), reason=(
                f"{len(found)} versions match, more than max_versions={p.max_versions}: "
                "narrow the physical device or the dates"))
        who = p.who or os.environ.get("USER") or "runbook"
        with _open(p, ctx) as db:
            changes = [db.enable(v.id, who, p.why) if enable else db.disable(v.id, who, p.why)
                       for v in found]
    except CalDBError as exc:
        return _caldb_error(exc)
    ids = [v.id for v in found]
    undo = "enable" if not enable else "disable"
    evidence = "\n".join([f"{c.action}d version {c.ccv_id}: deployed {c.old_deployed} -> "
                          f"{c.new_deployed}, good quality {c.old_good_quality} -> "
                          f"{c.new_good_quality}" for c in changes]
                         + ([f"undo: runbook caldb {undo} {' '.join(map(str, ids))} --why ..."]
                            if ids else ["nothing to change"]))
    return Result.ok(evidence, ids=ids)


@action("caldb.disable")
def caldb_disable(p: FlagChange, ctx: Context) -> Result:
    """Clear deployed and good quality (7.2 step 5) on every enabled match; audited."""
    return _flag(p, ctx, enable=False)


@action("caldb.enable")
def caldb_enable(p: FlagChange, ctx: Context) -> Result:
    """The undo of `caldb.disable`, on the same filter."""
    return _flag(p, ctx, enable=True)
