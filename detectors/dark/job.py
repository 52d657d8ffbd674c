"""The dark characterization as a job: check the runs, characterize and inject module by
module, then render the report.

The two halves are separate on purpose: ``run_modules`` is what one Slurm job does for
its block of modules (results go to ``<report>/parts/``), ``render`` is the last job,
which needs only those parts. ``run_dark`` does both in this process.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from caldb.errors import CalDBError, VersionTaken
from detectors import DetectorType
from detectors.dark._characterize import (
    DEFAULT_BLOCK_MIB,
    ModuleConstants,
    cells_per_block,
    characterize_module,
)
from detectors.dark._conditions import dark_conditions
from detectors.dark._runs import DarkRuns, inspect_runs
from detectors.dark._summary import (
    PARTS,
    Injection,
    ModuleSummary,
    load_summaries,
    read_json,
    summarize,
    write_json,
)
from detectors.dark.errors import DarkError

if TYPE_CHECKING:
    from caldb.remote_client import RemoteClient
    from caldb.store import CalDB

__all__ = ["DarkJob", "DarkResult", "check_runs", "run_modules", "render", "run_dark",
           "FACILITY_TZ", "META"]

#: the facility's notebooks print start dates in local time: 2020-07-23 09:06:39+02:00
FACILITY_TZ = "Europe/Berlin"
META = "meta.json"


@dataclass(frozen=True)
class DarkJob:
    """One dark characterization; ``detectors.dark.cli`` builds it from its options.

    ``conditions`` are snake_case overrides (``{"sensor_bias_voltage": 200}``); the rest
    come from the data and ``detectors.dark._conditions.DEFAULTS``.
    """

    instrument: str
    karabo_id: str
    detector: DetectorType
    proposal: int
    runs: tuple[int, ...]
    run_dirs: tuple[Path, ...]
    report_dir: Path
    modules: tuple[int, ...] | None = None
    conditions: Mapping[str, float | str] = field(default_factory=dict)
    trains: int | None = None
    max_block_mib: float = DEFAULT_BLOCK_MIB
    db_url: str | None = None
    store_root: Path | None = None
    timezone: str = FACILITY_TZ


@dataclass(frozen=True)
class DarkResult:
    """What ``run_dark`` did: the report and every constant's fate."""

    report_dir: Path
    index: Path | None
    summaries: list[ModuleSummary]

    def count(self, status: str) -> int:
        return sum(i.status == status for s in self.summaries for i in s.injections)


def check_runs(job: DarkJob) -> DarkRuns:
    """Step 1: the runs exist and hold the dark data of this detector, one per gain."""
    return inspect_runs(job.detector, job.karabo_id, job.runs, job.run_dirs,
                        modules=job.modules, trains=job.trains)


def local_time(when: datetime, timezone: str = FACILITY_TZ) -> datetime:
    """``when`` in the facility's time zone (UTC where the zone database is missing)."""
    try:
        return when.astimezone(ZoneInfo(timezone))
    except ZoneInfoNotFoundError:
        return when


def _facility_layout(array: np.ndarray) -> np.ndarray:
    """Axes reversed, as the facility stores dark constants: (y, x, cell, gain)."""
    return np.ascontiguousarray(array.T)


def _dims(calibration: str) -> tuple[str, ...]:
    last = "threshold" if calibration.startswith("ThresholdsDark") else "gain"
    return ("fast_scan", "slow_scan", "cell", last)


def _meta(job: DarkJob, runs: DarkRuns, conditions: Mapping[str, float | str]) -> dict[str, Any]:
    return {
        "instrument": job.instrument,
        "detector_type": job.detector.display_name,
        "karabo_id": job.karabo_id,
        "proposal": job.proposal,
        "runs": list(job.runs),
        "run_dirs": [str(p) for p in job.run_dirs],
        "trains": list(runs.n_trains),
        "memory_cells": runs.n_cells,
        "begin_at": str(local_time(runs.creation_date, job.timezone)),
        "conditions": dict(conditions),
        "evidence": list(runs.evidence),
        "report_dir": str(job.report_dir),
        "store_root": str(job.store_root) if job.store_root else "(default)",
    }


def _inject(db: CalDB | RemoteClient, job: DarkJob, runs: DarkRuns, module: int,
            result: ModuleConstants, conditions: Mapping[str, float | str],
            echo: Callable[[str], None]) -> list[Injection]:
    det = job.detector
    da = det.karabo_da(module)
    begin_at = runs.creation_date
    shown = local_time(begin_at, job.timezone)
    out: list[Injection] = []
    for name, array in result.by_calibration(det.dark_constants).items():
        try:
            info = db.inject(detector=job.karabo_id, karabo_da=da, calibration=name,
                             conditions=dict(conditions), begin_at=begin_at,
                             data=_facility_layout(array), dims=_dims(name),
                             raw_data_location=str(job.run_dirs[0]),
                             report=str(job.report_dir),
                             description=f"dark runs {', '.join(map(str, job.runs))}")
        except VersionTaken as exc:
            echo(f"Version already taken: {name} constants from {shown} for {da}; "
                 "not injected again")
            out.append(Injection(name, "taken", str(exc)))
            continue
        echo(f"Inject {name} constants from {shown}")
        out.append(Injection(name, "injected", f"version {info.id} ({info.file_name})",
                             info.id, info.physical_name))
    return out


def _open_db(job: DarkJob) -> CalDB | RemoteClient:
    """The DB itself, or its access points when the URL is their ZMQ interface (12):
    ``tcp://max-exfl016:8015#8044``, as the webservice passes it."""
    from caldb.remote_client import RemoteClient, endpoints_of
    from caldb.store import CalDB

    if job.db_url and job.db_url.startswith("tcp://"):
        return RemoteClient(endpoints_of(job.db_url))
    return CalDB.open(job.db_url, job.store_root)


def run_modules(job: DarkJob, console: Console | None = None, *,
                inject: bool = True) -> list[ModuleSummary]:
    """Steps 1-3 and 5 for ``job.modules``: check, read, characterize, inject, print.

    Each module's summary goes to ``<report_dir>/parts``. "Version already taken" is
    printed and recorded, and the job goes on with the next constant.
    """
    console = console or Console()
    runs = check_runs(job)
    conditions = dark_conditions(job.detector, runs, job.conditions)
    write_json(job.report_dir / PARTS / META, _meta(job, runs, conditions))
    det = job.detector
    block = cells_per_block(runs, job.max_block_mib)
    console.print(f"{det.display_name} {job.karabo_id}: runs {', '.join(map(str, job.runs))}, "
                  f"{len(runs.modules)} module(s), {runs.n_cells} cells in blocks of {block}, "
                  f"conditions {conditions}", highlight=False)
    summaries: list[ModuleSummary] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        db = _open_db(job) if inject else None
    except CalDBError as exc:
        raise DarkError(f"cannot open the calibration DB: {exc}") from exc
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("dark", total=len(runs.modules) * runs.n_cells)
            for module in runs.modules:
                da = det.karabo_da(module)
                progress.update(task, description=f"{da} ({det.module_label(module)})")
                result = characterize_module(runs, module, block,
                                             lambda n: progress.advance(task, n))
                injections = (_inject(db, job, runs, module, result, conditions,
                                      lambda text: progress.console.print(
                                          text, soft_wrap=True, highlight=False, markup=False))
                              if db is not None else [])
                summary = summarize(module, da, det.module_label(module), result.constants,
                                    injections)
                summary.save(job.report_dir / PARTS)
                summaries.append(summary)
                del result
    finally:
        if db is not None:
            db.close()
    return summaries


def render(report_dir: Path) -> Path:
    """Step 4: the HTML report from the module parts in ``report_dir``."""
    from detectors.dark.report import render_report

    meta = read_json(report_dir / PARTS / META)
    return render_report(report_dir, meta, load_summaries(report_dir))


def run_dark(job: DarkJob, console: Console | None = None, *, inject: bool = True) -> DarkResult:
    """The whole characterization in this process; returns the report and the outcomes."""
    summaries = run_modules(job, console, inject=inject)
    index = render(job.report_dir)
    return DarkResult(job.report_dir, index, summaries)
