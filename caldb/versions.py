"""A calibration constant version as the rest of the project sees it, and listing them.

``VersionInfo`` is a frozen snapshot, not an ORM row: checks and reports hold it after the
session is closed, and it can cross a process boundary (ZMQ, JSON) unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from caldb._time import format_time, parse_time
from caldb.catalogue import mapping_of_pdu_at
from caldb.conditions import condition_table
from caldb.errors import UnknownName
from caldb.models import (
    Calibration,
    CalibrationConstant,
    CalibrationConstantVersion,
    PhysicalDetectorUnit,
)

__all__ = ["VersionInfo", "version_info", "get_version", "list_versions"]


@dataclass(frozen=True)
class VersionInfo:
    """Get one from ``CalDB.find``, ``CalDB.get`` or ``CalDB.list``."""

    id: int
    name: str
    calibration: str
    detector_type: str
    constant_name: str
    physical_name: str
    karabo_da: str | None
    begin_at: datetime
    begin_validity_at: datetime
    end_validity_at: datetime | None
    file_name: str
    path_to_file: str
    data_set_name: str
    flg_deployed: bool
    flg_good_quality: bool
    start_idx: int
    end_idx: int
    raw_data_location: str
    report: str | None
    conditions: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    def file_path(self, store_root: str | Path) -> Path:
        return Path(store_root) / self.path_to_file / self.file_name

    @property
    def data_path(self) -> str:
        return f"{self.data_set_name}/data"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("begin_at", "begin_validity_at", "end_validity_at"):
            out[key] = format_time(out[key])
        out["conditions"] = {k: list(v) for k, v in self.conditions.items()}
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VersionInfo:
        fields = dict(data)
        for key in ("begin_at", "begin_validity_at"):
            fields[key] = parse_time(fields[key], key)
        end = fields.get("end_validity_at")
        fields["end_validity_at"] = None if end is None else parse_time(end, "end_validity_at")
        fields["conditions"] = {k: tuple(v) for k, v in fields.get("conditions", {}).items()}
        return cls(**fields)


def version_info(
    s: Session, ccv: CalibrationConstantVersion, karabo_da: str | None = None
) -> VersionInfo:
    """Snapshot ``ccv``; without ``karabo_da``, the module its PDU had at ``begin_at``."""
    cc = ccv.calibration_constant
    if karabo_da is None:
        mapping = mapping_of_pdu_at(s, ccv.physical_detector_unit_id, ccv.begin_at)
        karabo_da = None if mapping is None else mapping.karabo_da
    return VersionInfo(
        id=ccv.id,
        name=ccv.name,
        calibration=cc.calibration.name,
        detector_type=cc.detector_type.name,
        constant_name=cc.name,
        physical_name=ccv.physical_detector_unit.physical_name,
        karabo_da=karabo_da,
        begin_at=ccv.begin_at,
        begin_validity_at=ccv.begin_validity_at,
        end_validity_at=ccv.end_validity_at,
        file_name=ccv.file_name,
        path_to_file=ccv.path_to_file,
        data_set_name=ccv.data_set_name,
        flg_deployed=ccv.flg_deployed,
        flg_good_quality=ccv.flg_good_quality,
        start_idx=ccv.start_idx,
        end_idx=ccv.end_idx,
        raw_data_location=ccv.raw_data_location,
        report=None if ccv.report is None else ccv.report.file_path,
        conditions=condition_table(cc.condition),
    )


def get_version(s: Session, ccv_id: int) -> CalibrationConstantVersion:
    row = s.get(CalibrationConstantVersion, ccv_id)
    if row is None:
        raise UnknownName(f"no calibration constant version with id {ccv_id}")
    return row


def list_versions(
    s: Session,
    physical_device: str | None = None,
    calibration: str | None = None,
    start_from: datetime | None = None,
    start_to: datetime | None = None,
    only_enabled: bool = False,
    limit: int = 200,
) -> list[VersionInfo]:
    """Newest first, filtered like the backend's version overview (section 7, Fig. 7.3).

    ``physical_device`` is a case-insensitive substring, as the backend's fuzzy filter:
    "AGIPD" lists every AGIPD module. ``start_from``/``start_to`` bound ``begin_at``.
    """
    ccv = CalibrationConstantVersion
    query = (
        select(ccv)
        .join(PhysicalDetectorUnit, ccv.physical_detector_unit_id == PhysicalDetectorUnit.id)
        .join(CalibrationConstant, ccv.calibration_constant_id == CalibrationConstant.id)
        .join(Calibration, CalibrationConstant.calibration_id == Calibration.id)
    )
    if physical_device:
        query = query.where(
            func.lower(PhysicalDetectorUnit.physical_name).contains(
                physical_device.lower(), autoescape=True
            )
        )
    if calibration:
        query = query.where(Calibration.name == calibration)
    if start_from is not None:
        query = query.where(ccv.begin_at >= start_from)
    if start_to is not None:
        query = query.where(ccv.begin_at <= start_to)
    if only_enabled:
        query = query.where(ccv.flg_deployed.is_(True), ccv.flg_good_quality.is_(True))
    rows = s.scalars(query.order_by(ccv.begin_at.desc(), ccv.id.desc()).limit(limit))
    return [version_info(s, row) for row in rows]
