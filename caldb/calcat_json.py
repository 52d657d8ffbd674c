"""Rows in the JSON shapes that CalCat's API returns and its clients read.

Field names are those that calibration_client and EXtra's ``extra.calibration`` read:
a version carries ``path_to_file``, ``file_name``, ``data_set_name``, a nested
``calibration_constant`` (with ``calibration_id``) and a nested ``physical_detector_unit``
(with ``karabo_da`` at the lookup's snapshot and ``karabo_da_at_ccv_begin_at``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from caldb._time import format_time
from caldb.catalogue import mapping_of_pdu_at
from caldb.models import (
    Calibration,
    CalibrationConstant,
    CalibrationConstantVersion,
    Detector,
    DetectorType,
    Parameter,
    PduMapping,
    PhysicalDetectorUnit,
)

__all__ = [
    "detector_json",
    "detector_type_json",
    "calibration_json",
    "parameter_json",
    "pdu_json",
    "ccv_json",
]


def detector_json(d: Detector) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": d.name,
        "identifier": d.identifier,
        "karabo_name": d.karabo_name,
        "karabo_id_control": d.karabo_id_control,
        "number_of_modules": d.number_of_modules,
        "first_module_index": d.first_module_index,
        "source_name_pattern": d.source_name_pattern or None,
        "flg_available": d.flg_available,
        "description": d.description,
    }


def detector_type_json(t: DetectorType) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "flg_available": t.flg_available,
        "description": t.description,
    }


def calibration_json(c: Calibration) -> dict[str, Any]:
    return {
        "id": c.id,
        "name": c.name,
        "flg_available": c.flg_available,
        "description": c.description,
    }


def parameter_json(p: Parameter) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "unit": p.unit,
        "flg_available": p.flg_available,
        "flg_logarithmic": p.flg_logarithmic,
        "def_lower_deviation_value": p.def_lower_deviation_value,
        "def_upper_deviation_value": p.def_upper_deviation_value,
        "description": p.description,
    }


def _module_fields(m: PduMapping | None, suffix: str = "") -> dict[str, Any]:
    return {
        f"karabo_da{suffix}": None if m is None else m.karabo_da,
        f"virtual_device_name{suffix}": None if m is None else m.virtual_device_name or None,
        f"module_number{suffix}": None if m is None else m.module_number,
        f"detector_id{suffix}": None if m is None else m.detector_id,
    }


def pdu_json(u: PhysicalDetectorUnit, mapping: PduMapping | None) -> dict[str, Any]:
    """A PDU as ``physical_detector_units/get_all_by_detector`` lists it."""
    return {
        "id": u.id,
        "physical_name": u.physical_name,
        "uuid": u.uuid,
        "detector_type_id": u.detector_type_id,
        "detector_type": detector_type_json(u.detector_type),
        "flg_available": u.flg_available,
        "description": u.description,
        **_module_fields(mapping),
    }


def _constant_json(cc: CalibrationConstant) -> dict[str, Any]:
    return {
        "id": cc.id,
        "name": cc.name,
        "calibration_id": cc.calibration_id,
        "detector_type_id": cc.detector_type_id,
        "condition_id": cc.condition_id,
        "flg_available": cc.flg_available,
        "flg_auto_approve": cc.flg_auto_approve,
        "description": cc.description,
    }


def ccv_json(
    s: Session, v: CalibrationConstantVersion, snapshot_at: datetime | None = None
) -> dict[str, Any]:
    """A version; the PDU's ``karabo_da`` is its module at ``snapshot_at`` (default begin_at)."""
    at_begin = mapping_of_pdu_at(s, v.physical_detector_unit_id, v.begin_at)
    now_map = (
        at_begin
        if snapshot_at is None
        else mapping_of_pdu_at(s, v.physical_detector_unit_id, snapshot_at)
    )
    pdu = pdu_json(v.physical_detector_unit, now_map)
    pdu.update(_module_fields(at_begin, "_at_ccv_begin_at"))
    return {
        "id": v.id,
        "name": v.name,
        "file_name": v.file_name,
        "path_to_file": v.path_to_file,
        "data_set_name": v.data_set_name,
        "flg_deployed": v.flg_deployed,
        "flg_good_quality": v.flg_good_quality,
        "begin_validity_at": format_time(v.begin_validity_at),
        "end_validity_at": format_time(v.end_validity_at),
        "begin_at": format_time(v.begin_at),
        "start_idx": v.start_idx,
        "end_idx": v.end_idx,
        "raw_data_location": v.raw_data_location or None,
        "report_id": v.report_id,
        "description": v.description,
        "calibration_constant_id": v.calibration_constant_id,
        "physical_detector_unit_id": v.physical_detector_unit_id,
        "calibration_constant": _constant_json(v.calibration_constant),
        "physical_detector_unit": pdu,
    }
