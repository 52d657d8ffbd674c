"""Injecting a constant: the HDF5 file in the store, then the version row.

Order of work, and why it leaves no orphan a lookup can find:

1. Validate everything and check "Version already taken" by reading only.
2. Write the HDF5 file under a temporary name, fsync it, and link it to its final name
   ``<detector type>/<pdu>/cal.<unix time>.h5`` (``os.link`` refuses to overwrite).
3. Insert the version row and commit. The commit is the one moment at which the version
   exists: lookups only ever reach files through rows.

A crash before 3 leaves at most a file that no row names; it is invisible to every lookup,
does not block injecting the same version again (the next attempt gets a new file name),
and ``sweep_orphans`` lists or removes it. The other order (row first, file later, or
rename after commit) would leave, after a crash, a committed row whose file is missing or
half-written, and a correction would load it. A failure that is not a crash (constraint
violation, DB error) removes the file before raising.

Inside a plan or diagnose walk of the runbook engine, writing the file, inserting the row
and removing orphans raise ``MutationRefused`` before anything is written; the dark job,
the ``caldb`` CLI and the twin's seeding run outside walks and inject as before.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import h5py
import numpy as np
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from caldb._time import now, require_aware
from caldb.catalogue import calibration_by_name, modules_at, pdu_by_name
from caldb.conditions import Deviations, check_conditions, condition_table, ensure_condition
from caldb.errors import BadRequest, CalDBError, VersionTaken
from caldb.models import (
    CalibrationConstant,
    CalibrationConstantVersion,
    PhysicalDetectorUnit,
    Report,
)
from engine.registry import guard_transport

__all__ = [
    "InjectRequest",
    "resolve_pdu",
    "check_not_taken",
    "write_constant_file",
    "insert_version",
    "sweep_orphans",
]


@dataclass(frozen=True)
class InjectRequest:
    """Everything one injection needs; ``CalDB.inject`` builds it from keyword arguments."""

    calibration: str
    conditions: Mapping[str, float]
    data: np.ndarray
    begin_at: datetime
    detector: str | None = None
    karabo_da: str | None = None
    pdu: str | None = None
    deviations: Deviations | None = None
    begin_validity_at: datetime | None = None
    end_validity_at: datetime | None = None
    start_idx: int = 0
    end_idx: int = 0
    raw_data_location: str = ""
    report: str | None = None
    description: str = ""
    dims: tuple[str, ...] | None = None
    flg_good_quality: bool = True

    def checked(self) -> InjectRequest:
        if not isinstance(self.data, np.ndarray):
            raise BadRequest(f"constant data must be a numpy array, got {type(self.data).__name__}")
        if self.data.size == 0:
            raise BadRequest("constant data is empty")
        if self.dims is not None and len(self.dims) != self.data.ndim:
            raise BadRequest(f"dims {self.dims} do not match the data's {self.data.ndim} axes")
        begin_at = require_aware(self.begin_at, "begin_at")
        validity = require_aware(self.begin_validity_at or begin_at, "begin_validity_at")
        end = (
            None
            if self.end_validity_at is None
            else require_aware(self.end_validity_at, "end_validity_at")
        )
        check_conditions(self.conditions)
        return replace(self, begin_at=begin_at, begin_validity_at=validity, end_validity_at=end)


def resolve_pdu(s: Session, req: InjectRequest) -> PhysicalDetectorUnit:
    """The PDU named, or the one mapped to detector/karabo_da when the data was taken."""
    if req.pdu is not None:
        if req.detector is not None or req.karabo_da is not None:
            raise BadRequest("give either a PDU or a detector with a karabo_da, not both")
        return pdu_by_name(s, req.pdu)
    if req.detector is None or not req.karabo_da:
        raise BadRequest("give a PDU, or a detector and its module karabo_da")
    (mapping,) = modules_at(s, req.detector, req.begin_at, req.karabo_da)
    return mapping.pdu


def check_not_taken(s: Session, pdu_id: int, calibration_id: int, req: InjectRequest) -> None:
    """Section 12.2: same PDU, calibration, start date and operating conditions is taken.

    Operating conditions are compared by parameter names and values; deviations do not make
    a version different, so they cannot be used to slip a duplicate past the check.
    """
    wanted = check_conditions(req.conditions)
    rows = s.scalars(
        select(CalibrationConstantVersion)
        .join(CalibrationConstant)
        .where(
            CalibrationConstantVersion.physical_detector_unit_id == pdu_id,
            CalibrationConstant.calibration_id == calibration_id,
            CalibrationConstantVersion.begin_at == req.begin_at,
        )
    )
    for row in rows:
        stored = {k: v[0] for k, v in condition_table(row.calibration_constant.condition).items()}
        if stored == wanted:
            raise VersionTaken(
                f"Version already taken: {req.calibration} for "
                f"{row.physical_detector_unit.physical_name} from {req.begin_at.isoformat()} "
                f"with these conditions is version {row.id} ({row.file_name}). Check that the "
                f"right data was characterized with the right conditions."
            )


def write_constant_file(
    store_root: Path, detector_type: str, pdu: str, req: InjectRequest
) -> tuple[str, str, str]:
    """Write the file atomically; return (path_to_file, file_name, data_set_name)."""
    guard_transport(f"inject {req.calibration} for {pdu} into the calibration DB")
    rel_dir = f"{detector_type.lower()}/{pdu.lower()}/"
    folder = store_root / rel_dir
    folder.mkdir(parents=True, exist_ok=True)
    data_set_name = f"/{pdu}/{req.calibration}/0"
    tmp = folder / f".cal.inject.{os.getpid()}.{time.monotonic_ns()}.tmp"
    try:
        with h5py.File(tmp, "w") as f:
            group = f.create_group(data_set_name)
            dset = group.create_dataset("data", data=req.data)
            if req.dims is not None:
                dset.attrs["dims"] = np.array(req.dims, dtype=h5py.string_dtype())
            group.attrs["begin_at"] = req.begin_at.isoformat()
            group.attrs["calibration"] = req.calibration
            group.attrs["physical_name"] = pdu
            for name, value in check_conditions(req.conditions).items():
                group.create_dataset(f"condition/{name}/value", data=value)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        for _ in range(100):
            file_name = f"cal.{time.time()!r}.h5"
            try:
                os.link(tmp, folder / file_name)
                break
            except FileExistsError:
                continue
        else:
            raise CalDBError(f"could not find a free file name in {folder}")
    except OSError as exc:
        raise CalDBError(f"could not write the constant file in {folder}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return rel_dir, file_name, data_set_name


def _report(s: Session, path: str | None) -> Report | None:
    if not path:
        return None
    row = s.scalars(select(Report).where(Report.file_path == path)).first()
    if row is None:
        row = Report(name=Path(path).name, file_path=path)
        s.add(row)
    return row


def _constant(
    s: Session, dtype_id: int, dtype: str, cal_id: int, req: InjectRequest, cal: str
) -> CalibrationConstant:
    cond = ensure_condition(s, req.conditions, req.deviations)
    s.flush()
    query = select(CalibrationConstant).where(
        CalibrationConstant.detector_type_id == dtype_id,
        CalibrationConstant.calibration_id == cal_id,
        CalibrationConstant.condition_id == cond.id,
    )
    row = s.scalars(query).first()
    if row is not None:
        return row
    row = CalibrationConstant(
        name=f"{dtype}_{cal}_{cond.name}",
        detector_type_id=dtype_id,
        calibration_id=cal_id,
        condition_id=cond.id,
    )
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        return s.scalars(query).one()
    return row


def insert_version(
    s: Session, pdu: PhysicalDetectorUnit, req: InjectRequest, files: tuple[str, str, str]
) -> CalibrationConstantVersion:
    """Add the row (the caller commits); the constraint catches a concurrent duplicate."""
    guard_transport(f"inject {req.calibration} for {pdu.physical_name} into the calibration DB")
    cal = calibration_by_name(s, req.calibration)
    constant = _constant(s, pdu.detector_type_id, pdu.detector_type.name, cal.id, req, cal.name)
    created = now()
    path_to_file, file_name, data_set_name = files
    row = CalibrationConstantVersion(
        name=f"{created:%Y%m%d_%H%M%S}_sIdx={req.start_idx}",
        file_name=file_name,
        path_to_file=path_to_file,
        data_set_name=data_set_name,
        calibration_constant_id=constant.id,
        physical_detector_unit_id=pdu.id,
        flg_deployed=True,
        flg_good_quality=req.flg_good_quality,
        begin_validity_at=req.begin_validity_at,
        end_validity_at=req.end_validity_at,
        begin_at=req.begin_at,
        start_idx=req.start_idx,
        end_idx=req.end_idx,
        raw_data_location=req.raw_data_location,
        report=_report(s, req.report),
        description=req.description,
        created_at=created,
    )
    s.add(row)
    return row


def sweep_orphans(
    s: Session, store_root: Path, *, remove: bool = False, min_age_s: float = 3600.0
) -> list[Path]:
    """Files in the store that no version names (left by a crash), older than ``min_age_s``.

    The age guard keeps a sweep from deleting a file whose injection is still between
    writing the file and committing its row.
    """
    if remove:
        guard_transport(f"remove orphan files from {store_root}")
    known = {
        (p.rstrip("/"), f)
        for p, f in s.execute(
            select(CalibrationConstantVersion.path_to_file, CalibrationConstantVersion.file_name)
        )
    }
    cutoff = time.time() - min_age_s
    found: list[Path] = []
    for path in sorted(store_root.rglob("*")):
        if not path.is_file() or not path.name.startswith(("cal.", ".cal.")):
            continue
        rel = path.relative_to(store_root)
        if (rel.parent.as_posix(), rel.name) in known or path.stat().st_mtime > cutoff:
            continue
        found.append(path)
        if remove:
            path.unlink()
    return found
