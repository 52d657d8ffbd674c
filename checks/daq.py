"""Checks on what the DAQ wrote: a run folder opened with EXtra-data, as users open it.

`daq.run_files` is ok when the run opens and holds what the runbook expects (trains,
sources, bytes).  A folder that cannot be read (permissions, not a folder, I/O errors) is
`unknown`; a folder that is missing, empty, or whose files EXtra-data cannot use is a
`fail`, because that is what the DAQ left behind.  Files that are not HDF5 at all are set
aside before EXtra-data sees them (it would print about them) and listed as unusable.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.registry import check
from engine.result import Result

__all__ = ["RunFiles", "run_files"]

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
