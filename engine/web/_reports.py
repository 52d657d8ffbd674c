"""The dark characterization reports under one root, found and served without escaping it.

`runbook dark` writes each report into the site's `report_path`
(`.../reports/{instrument}/{det_instance}/dark/dark_{proposal}_{runs}_{time_stamp}`), so
the newest folders are found by name a few levels down, never by walking all of GPFS.
"""

from __future__ import annotations

import heapq
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DarkReport", "dark_reports", "inside"]

#: `dark_900146_r67_r68_r69_200723_120510`, as `detectors.dark._paths.report_name` writes it
_NAME = re.compile(r"^dark_(?P<proposal>\d+)_(?P<runs>r\d+(?:_r\d+)*)_(?P<stamp>\d{6}_\d{6})$")
#: how far below the root a report folder may lie: instrument/detector/dark/dark_*
_DEPTH = 4
#: the zone of the names' time stamps (`detectors.dark.job.FACILITY_TZ`)
_FACILITY_TZ = "Europe/Berlin"


def _zone() -> tzinfo:
    try:
        return ZoneInfo(_FACILITY_TZ)
    except ZoneInfoNotFoundError:
        return UTC


@dataclass(frozen=True)
class DarkReport:
    """One report folder, as `dark_reports(root)` lists it."""

    rel: str
    name: str
    instrument: str
    detector: str
    proposal: str
    runs: str
    when: float
    has_index: bool


def _describe(root: Path, path: Path) -> DarkReport:
    rel = path.relative_to(root)
    parts = rel.parts
    nested = len(parts) >= 4 and parts[-2] == "dark"
    match = _NAME.match(path.name)
    when = None
    if match:
        try:
            when = datetime.strptime(match["stamp"], "%y%m%d_%H%M%S").replace(tzinfo=_zone())
        except ValueError:
            when = None
    try:
        stamp = when.timestamp() if when else path.stat().st_mtime
    except OSError:
        stamp = 0.0
    return DarkReport(
        rel=rel.as_posix(), name=path.name,
        instrument=parts[-4] if nested else "", detector=parts[-3] if nested else "",
        proposal=match["proposal"] if match else "",
        runs=match["runs"].replace("_", ", ") if match else "",
        when=stamp, has_index=(path / "index.html").is_file())


def _folders(root: Path, depth: int) -> list[Path]:
    found: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return found
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        if entry.name.startswith("dark_"):
            found.append(Path(entry.path))
        elif depth > 1:
            found += _folders(Path(entry.path), depth - 1)
    return found


def dark_reports(root: Path, limit: int = 20) -> list[DarkReport]:
    """The `limit` newest `dark_*` folders, newest first (by the name's time stamp)."""
    root = root.resolve()
    reports = (_describe(root, p) for p in _folders(root, _DEPTH))
    return heapq.nlargest(limit, reports, key=lambda r: (r.when, r.rel))


def inside(root: Path, rel: str) -> Path | None:
    """`root/rel` with every link and `..` resolved, or None where that leaves the root."""
    base = root.resolve()
    try:
        target = (base / rel).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return target if target.is_relative_to(base) else None
