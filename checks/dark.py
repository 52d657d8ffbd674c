"""Checks and the action of the dark-characterization runbook (sections 5, 8 and 8.2).

``dark.runs`` checks that the dark runs exist and hold one gain stage each,
``dark.characterize`` runs ``runbook dark`` (it injects, so it is an action),
``dark.constants`` looks the injected constants up again (8.2: "have the constants been
created and injected?"), and ``dark.report`` finds the report in the standardized
location (8 C). Heavy modules (extra-data, h5py, SQLAlchemy) are imported inside them.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.registry import action, check, guard_mutation
from engine.result import Result

if TYPE_CHECKING:
    from detectors.dark.job import DarkJob

__all__ = ["DarkRunsParams", "DarkCharacterizeParams", "DarkDbParams", "DarkReportParams",
           "dark_runs", "dark_characterize", "dark_constants", "dark_report"]


class DarkRunsParams(BaseModel):
    """The runs of one dark characterization, as `runbook dark` takes them."""

    model_config = ConfigDict(extra="forbid")

    detector: str
    runs: str | list[int]
    proposal: int = Field(gt=0, lt=1_000_000)
    cycle: str | None = None
    raw_root: str | None = None
    modules: str | list[int] | None = None
    detector_type: str | None = None
    trains: int | None = Field(default=None, ge=2)


class DarkDbParams(DarkRunsParams):
    db: str | None = None
    store_root: str | None = None
    conditions: list[str] = Field(default_factory=list)


class DarkCharacterizeParams(DarkDbParams):
    report_root: str | None = None
    max_block_mib: float = Field(default=2048.0, gt=0)


class DarkReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    detector: str
    runs: str | list[int]
    proposal: int = Field(gt=0, lt=1_000_000)
    report_root: str | None = None
    detector_type: str | None = None


def _path(text: str | None) -> Path | None:
    return Path(text) if text else None


def _job(p: DarkRunsParams, ctx: Context, **extra: Any) -> DarkJob:
    from detectors.dark.resolve import resolve_job

    if ctx.instrument is None:
        from engine.errors import RunbookError

        raise RunbookError("the dark checks need an instrument (--instrument)")
    db = p if isinstance(p, DarkDbParams) else None
    return resolve_job(
        instrument=ctx.instrument, detector=p.detector, runs=p.runs, proposal=p.proposal,
        site=ctx.site, cycle=p.cycle, modules=p.modules, detector_type=p.detector_type,
        raw_root=_path(p.raw_root), trains=p.trains,
        conditions=db.conditions if db else [], db_url=db.db if db else None,
        store_root=_path(db.store_root) if db else None, **extra)


@check("dark.runs")
def dark_runs(p: DarkRunsParams, ctx: Context) -> Result:
    """Section 5 / 10.1: the dark runs are on disk and hold one gain stage each, in order."""
    from detectors.dark.errors import DarkInputError
    from detectors.dark.job import check_runs

    job = _job(p, ctx)
    shown = "\n".join(str(d) for d in job.run_dirs)
    try:
        runs = check_runs(job)
    except DarkInputError as exc:
        return Result(outcome="fail", reason=str(exc), evidence=shown,
                      observed={"runs": list(job.runs)})
    return Result.ok("\n".join([shown, *runs.evidence]), runs=list(job.runs),
                     modules=list(runs.modules), cells=runs.n_cells,
                     trains=list(runs.n_trains), created=runs.creation_date.isoformat())


@action("dark.characterize")
def dark_characterize(p: DarkCharacterizeParams, ctx: Context) -> Result:
    """Run the characterization: constants into the DB, report into the report folder."""
    from rich.console import Console

    from detectors.dark.job import run_dark

    job = _job(p, ctx, report_root=_path(p.report_root), max_block_mib=p.max_block_mib)
    guard_mutation(f"inject dark constants of {job.karabo_id}")
    out = io.StringIO()
    result = run_dark(job, Console(file=out, soft_wrap=True, width=200))
    observed = {"report": str(result.index), "injected": result.count("injected"),
                "taken": result.count("taken")}
    if observed["injected"] == 0 and observed["taken"] == 0:
        return Result(outcome="fail", reason="no constant was injected", evidence=out.getvalue(),
                      observed=observed)
    return Result.ok(out.getvalue(), **observed)


@check("dark.constants")
def dark_constants(p: DarkDbParams, ctx: Context) -> Result:
    """Section 8.2: every module has each dark constant, from the runs' creation date."""
    from caldb.errors import CalDBError
    from caldb.store import CalDB
    from detectors.dark._conditions import dark_conditions
    from detectors.dark.errors import DarkInputError
    from detectors.dark.job import check_runs

    job = _job(p, ctx)
    try:
        runs = check_runs(job)
    except DarkInputError as exc:
        return Result.unknown(f"the runs cannot be read, so their conditions are unknown: {exc}")
    conditions = dark_conditions(job.detector, runs, job.conditions)
    det = job.detector
    with CalDB.open(job.db_url, job.store_root) as db:
        missing, found = [], []
        for module in runs.modules:
            da = det.karabo_da(module)
            try:
                versions = db.find(detector=job.karabo_id, karabo_da=da,
                                   calibrations=list(det.dark_constants),
                                   conditions=conditions,  # type: ignore[arg-type]
                                   event_at=runs.creation_date, strategy="prior")
            except CalDBError as exc:
                missing.append(f"{da}: {exc}")
                continue
            have = {v.calibration: v for v in versions if v.begin_at == runs.creation_date}
            for name in det.dark_constants:
                if name in have:
                    found.append(f"{da} {name}: version {have[name].id} from "
                                 f"{have[name].begin_at.isoformat()}")
                else:
                    missing.append(f"{da} {name}")
    evidence = "\n".join(found + [f"missing: {m}" for m in missing])
    if missing:
        return Result(outcome="fail", evidence=evidence, observed={"missing": missing},
                      reason=f"{len(missing)} constant(s) not injected with these conditions")
    return Result.ok(evidence, constants=len(found), conditions=conditions)


@check("dark.report")
def dark_report(p: DarkReportParams, ctx: Context) -> Result:
    """Section 8 C: the newest report of these runs, in the standardized location."""
    import re
    from datetime import UTC, datetime

    from detectors.dark._paths import report_dir, runs_label
    from detectors.dark.resolve import find_detector, parse_numbers, site_context

    site = site_context(ctx.site, ctx.instrument or "")
    karabo_id, _ = find_detector(site, p.detector, p.detector_type)
    runs = parse_numbers(p.runs, "runs")
    parent = report_dir(site.get("vars", {}).get("report_path"), instrument=ctx.instrument or "",
                        det_instance=karabo_id, proposal=p.proposal, runs=runs,
                        when=datetime.now(UTC), report_root=_path(p.report_root)).parent
    stem = f"dark_{p.proposal:06d}_{runs_label(runs)}"
    pattern = re.compile(re.escape(stem) + r"_\d{6}_\d{6}$")
    candidates = sorted(x for x in parent.glob(f"{stem}_*") if pattern.match(x.name)) \
        if parent.is_dir() else []
    if not candidates:
        return Result(outcome="fail", reason=f"no report {stem}_<time stamp> in {parent}",
                      evidence=str(parent))
    newest = candidates[-1]
    index = newest / "index.html"
    pngs = sorted(x.name for x in newest.glob("*.png"))
    if not index.is_file():
        return Result(outcome="fail", reason=f"{newest} has no index.html (rendering failed?)",
                      evidence=str(newest), observed={"figures": pngs})
    return Result.ok(f"{index}\n" + "\n".join(pngs), report=str(index), figures=len(pngs))
