"""From what a person types (or a runbook passes) to a ``DarkJob``: the detector from the
site's inventory, the run folders from `raw_path`, the report folder from `report_path`.

Shared by the CLI and the runbook checks, so that both resolve the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from detectors import get_detector_type
from detectors.dark._characterize import DEFAULT_BLOCK_MIB
from detectors.dark._conditions import parse_conditions
from detectors.dark._paths import raw_run_dir, report_dir
from detectors.dark.errors import DarkError
from detectors.dark.job import DarkJob, local_time
from engine.errors import RunbookError

__all__ = ["parse_numbers", "site_context", "find_detector", "resolve_job"]


def parse_numbers(text: str | Sequence[int | str], what: str) -> tuple[int, ...]:
    """``"67,68,69"`` or ``"0-3,8"`` (or a list) -> a tuple of ints, in the order given."""
    items = [p.strip() for p in text.split(",")] if isinstance(text, str) else list(text)
    out: list[int] = []
    problems = []
    for item in items:
        part = str(item).strip()
        lo, dash, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(part)])
        except ValueError:
            problems.append(repr(part))
    if problems or not out:
        raise DarkError(f"{what}: expected numbers like 67,68,69 or 0-3, got "
                        f"{', '.join(problems) or 'nothing'}")
    if len(set(out)) != len(out):
        raise DarkError(f"{what}: {text!r} names a number twice")
    return tuple(out)


def site_context(site: str, instrument: str) -> dict[str, Any]:
    """The instrument's template context in the site's inventory."""
    from engine.inventory import load_site

    try:
        return load_site(site).context(instrument)
    except RunbookError as exc:
        raise DarkError(f"site {site!r}, instrument {instrument!r}: {exc}") from exc


def find_detector(ctx: Mapping[str, Any], detector: str,
                  detector_type: str | None = None) -> tuple[str, str]:
    """(karabo_id, type name) of ``detector``: a karabo_id or an inventory detector key."""
    known = ctx.get("instrument", {}).get("detectors", {})
    for key, entry in known.items():
        if detector in (key, entry.get("karabo_id")):
            return str(entry.get("karabo_id") or detector), detector_type or str(entry["type"])
    if detector_type:
        return detector, detector_type
    names = ", ".join(f"{e.get('karabo_id')} ({k})" for k, e in known.items()) or "none"
    raise DarkError(f"detector {detector!r} is not in the inventory of "
                    f"{ctx.get('instrument', {}).get('name')} (known: {names}); "
                    "pass --detector-type to use it anyway")


def resolve_job(
    *,
    instrument: str,
    detector: str,
    runs: str | Sequence[int],
    proposal: int,
    site: str = "xfel",
    cycle: str | None = None,
    modules: str | Sequence[int] | None = None,
    detector_type: str | None = None,
    raw_root: Path | None = None,
    run_dirs: Sequence[Path] | None = None,
    report_root: Path | None = None,
    report_folder: Path | None = None,
    conditions: Sequence[str] | Mapping[str, float | str] = (),
    trains: int | None = None,
    max_block_mib: float = DEFAULT_BLOCK_MIB,
    db_url: str | None = None,
    store_root: Path | None = None,
    when: datetime | None = None,
) -> DarkJob:
    """Every input checked and every path filled in; nothing is read from the runs yet."""
    if not 0 < proposal < 1_000_000:
        raise DarkError(f"proposal must be a number like 900146, not {proposal}")
    run_list = parse_numbers(runs, "runs")
    ctx = site_context(site, instrument)
    karabo_id, type_name = find_detector(ctx, detector, detector_type)
    det = get_detector_type(type_name)
    site_vars = ctx.get("vars", {})
    if run_dirs:
        dirs = tuple(Path(p) for p in run_dirs)
        if len(dirs) != len(run_list):
            raise DarkError(f"{len(dirs)} run folders for {len(run_list)} runs")
    else:
        dirs = tuple(raw_run_dir(r, raw_root=raw_root, pattern=site_vars.get("raw_path"),
                                 instrument=instrument, cycle=cycle, proposal=proposal)
                     for r in run_list)
    stamp = local_time(when or datetime.now(UTC))
    folder = report_folder or report_dir(
        site_vars.get("report_path"), instrument=instrument, det_instance=karabo_id,
        proposal=proposal, runs=run_list, when=stamp, report_root=report_root)
    given = dict(conditions) if isinstance(conditions, Mapping) else parse_conditions(conditions)
    mods = None
    if modules is not None:
        mods = parse_numbers(modules, "modules")
        try:
            for m in mods:
                det.check_module(m)
        except ValueError as exc:
            raise DarkError(str(exc)) from exc
    return DarkJob(instrument=instrument, karabo_id=karabo_id, detector=det,
                   proposal=proposal, runs=run_list, run_dirs=dirs, report_dir=Path(folder),
                   modules=mods, conditions=given, trains=trains, max_block_mib=max_block_mib,
                   db_url=db_url, store_root=store_root)
