"""The static part of the catalogue: detector types, detectors, PDUs and their mapping,
calibrations and parameters, and a seed file that declares them all.

Kept apart from lookup and injection because the twin and the tests declare the facility
once and then only read it. Every ``ensure_*`` is idempotent, so a seed can be loaded
again; a second declaration that contradicts the first is an error, never a silent update.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from caldb._time import require_aware
from caldb.errors import BadRequest, CalDBError, UnknownName
from caldb.models import (
    Base,
    Calibration,
    Detector,
    DetectorType,
    Parameter,
    PduMapping,
    PhysicalDetectorUnit,
)

__all__ = [
    "ensure_detector_type",
    "ensure_detector",
    "ensure_pdu",
    "ensure_calibration",
    "ensure_parameter",
    "map_pdu",
    "detector_by_identifier",
    "pdu_by_name",
    "calibration_by_name",
    "parameters_by_name",
    "modules_at",
    "mapping_of_pdu_at",
    "SeedSpec",
    "seed",
]


def _unknown(kind: str, name: str, known: Sequence[str]) -> UnknownName:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return UnknownName(f"unknown {kind} {name!r}{hint}")


def _by_name[R: Base](s: Session, model: type[R], column: str, name: str, kind: str) -> R:
    row = s.scalars(select(model).where(getattr(model, column) == name)).first()
    if row is None:
        known = list(s.scalars(select(getattr(model, column))))
        raise _unknown(kind, name, known)
    return row


def detector_by_identifier(s: Session, identifier: str) -> Detector:
    return _by_name(s, Detector, "identifier", identifier, "detector")


def pdu_by_name(s: Session, physical_name: str) -> PhysicalDetectorUnit:
    return _by_name(s, PhysicalDetectorUnit, "physical_name", physical_name, "PDU")


def calibration_by_name(s: Session, name: str) -> Calibration:
    return _by_name(s, Calibration, "name", name, "calibration")


def parameters_by_name(s: Session, names: Sequence[str]) -> dict[str, Parameter]:
    """Every name must exist: an unknown parameter can match nothing, so say so early."""
    rows = {p.name: p for p in s.scalars(select(Parameter).where(Parameter.name.in_(names)))}
    missing = [n for n in names if n not in rows]
    if missing:
        known = list(s.scalars(select(Parameter.name)))
        raise UnknownName("; ".join(str(_unknown("parameter", n, known)) for n in missing))
    return rows


def _ensure[R: Base](
    s: Session, model: type[R], key: str, value: str, fields: Mapping[str, Any]
) -> R:
    row = s.scalars(select(model).where(getattr(model, key) == value)).first()
    if row is None:
        row = model(**{key: value}, **fields)
        s.add(row)
        s.flush()
        return row
    clashes = [
        f"{k}: {getattr(row, k)!r} != {v!r}" for k, v in fields.items() if getattr(row, k) != v
    ]
    if clashes:
        raise CalDBError(
            f"{model.__tablename__} {value!r} already exists with other values "
            f"({'; '.join(clashes)})"
        )
    return row


def ensure_detector_type(s: Session, name: str, description: str = "") -> DetectorType:
    return _ensure(s, DetectorType, "name", name, {"description": description})


def ensure_detector(s: Session, identifier: str, **fields: Any) -> Detector:
    fields.setdefault("name", identifier)
    return _ensure(s, Detector, "identifier", identifier, fields)


def ensure_pdu(
    s: Session, physical_name: str, detector_type: str, uuid: int | None = None
) -> PhysicalDetectorUnit:
    dtype = _by_name(s, DetectorType, "name", detector_type, "detector type")
    return _ensure(
        s,
        PhysicalDetectorUnit,
        "physical_name",
        physical_name,
        {"detector_type_id": dtype.id, "uuid": uuid},
    )


def ensure_calibration(s: Session, name: str, description: str = "") -> Calibration:
    return _ensure(s, Calibration, "name", name, {"description": description})


def ensure_parameter(
    s: Session, name: str, lower: float = 0.0, upper: float = 0.0, unit: str = ""
) -> Parameter:
    if lower < 0 or upper < 0:
        raise BadRequest(f"parameter {name!r}: deviations must not be negative")
    return _ensure(
        s,
        Parameter,
        "name",
        name,
        {
            "def_lower_deviation_value": float(lower),
            "def_upper_deviation_value": float(upper),
            "unit": unit,
        },
    )


def _overlaps(a0: datetime, a1: datetime | None, b0: datetime, b1: datetime | None) -> bool:
    return (a1 is None or b0 < a1) and (b1 is None or a0 < b1)


def map_pdu(
    s: Session,
    pdu: str,
    detector: str,
    karabo_da: str,
    begin_at: datetime,
    end_at: datetime | None = None,
    virtual_device_name: str = "",
    module_number: int | None = None,
) -> PduMapping:
    """Install ``pdu`` as module ``karabo_da`` of ``detector`` for [begin_at, end_at).

    An overlap with another mapping of the same PDU or the same module would make the
    lookup at event time ambiguous, so it is refused; an identical mapping is a no-op.
    """
    begin_at = require_aware(begin_at, "begin_at")
    end_at = None if end_at is None else require_aware(end_at, "end_at")
    if end_at is not None and end_at <= begin_at:
        raise BadRequest(f"mapping of {pdu} ends ({end_at}) before it begins ({begin_at})")
    unit = pdu_by_name(s, pdu)
    det = detector_by_identifier(s, detector)
    others = s.scalars(
        select(PduMapping).where(
            or_(
                PduMapping.physical_detector_unit_id == unit.id,
                (PduMapping.detector_id == det.id) & (PduMapping.karabo_da == karabo_da),
            )
        )
    )
    for m in others:
        same = (m.physical_detector_unit_id, m.detector_id, m.karabo_da, m.begin_at, m.end_at) == (
            unit.id,
            det.id,
            karabo_da,
            begin_at,
            end_at,
        )
        if same:
            return m
        if _overlaps(m.begin_at, m.end_at, begin_at, end_at):
            raise CalDBError(
                f"mapping {pdu} -> {detector}/{karabo_da} from {begin_at} overlaps "
                f"{m.pdu.physical_name} -> {m.detector.identifier}/{m.karabo_da} "
                f"[{m.begin_at}, {m.end_at or 'open'})"
            )
    row = PduMapping(
        physical_detector_unit_id=unit.id,
        detector_id=det.id,
        karabo_da=karabo_da,
        virtual_device_name=virtual_device_name,
        module_number=module_number,
        begin_at=begin_at,
        end_at=end_at,
    )
    s.add(row)
    s.flush()
    return row


def _active_at(at: datetime) -> Any:
    return (PduMapping.begin_at <= at) & (PduMapping.end_at.is_(None) | (PduMapping.end_at > at))


def modules_at(
    s: Session, detector: str, at: datetime, karabo_da: str | None = None
) -> list[PduMapping]:
    """The PDUs installed in ``detector`` at time ``at``, sorted by karabo_da."""
    det = detector_by_identifier(s, detector)
    query = select(PduMapping).where(PduMapping.detector_id == det.id, _active_at(at))
    if karabo_da:
        query = query.where(PduMapping.karabo_da == karabo_da)
    rows = list(s.scalars(query.order_by(PduMapping.karabo_da)))
    if karabo_da and not rows:
        known = sorted(
            {
                m.karabo_da
                for m in s.scalars(select(PduMapping).where(PduMapping.detector_id == det.id))
            }
        )
        raise UnknownName(
            f"no PDU is mapped to {detector}/{karabo_da} at {at.isoformat()}"
            f" (modules ever mapped: {', '.join(known) or 'none'})"
        )
    return rows


def mapping_of_pdu_at(s: Session, pdu_id: int, at: datetime) -> PduMapping | None:
    return s.scalars(
        select(PduMapping).where(PduMapping.physical_detector_unit_id == pdu_id, _active_at(at))
    ).first()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ParameterSpec(_Strict):
    name: str
    lower: float = Field(0.0, ge=0)
    upper: float = Field(0.0, ge=0)
    unit: str = ""


class DetectorSpec(_Strict):
    identifier: str
    name: str
    karabo_name: str = ""
    karabo_id_control: str = ""
    number_of_modules: int = 1
    first_module_index: int = 0
    source_name_pattern: str = ""


class PduSpec(_Strict):
    physical_name: str
    detector_type: str
    uuid: int | None = None


class MappingSpec(_Strict):
    pdu: str
    detector: str
    karabo_da: str
    begin_at: datetime
    end_at: datetime | None = None
    virtual_device_name: str = ""
    module_number: int | None = None

    @field_validator("begin_at", "end_at")
    @classmethod
    def _utc_if_naive(cls, value: datetime | None) -> datetime | None:
        # A seed file is text: a time without an offset is UTC, as everywhere at the edges.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class SeedSpec(_Strict):
    """What a seed file (YAML or JSON) declares; every key is checked, unknown keys refused."""

    detector_types: list[str] = []
    calibrations: list[str] = []
    parameters: list[ParameterSpec] = []
    detectors: list[DetectorSpec] = []
    pdus: list[PduSpec] = []
    mappings: list[MappingSpec] = []


def seed(s: Session, spec: Mapping[str, Any] | SeedSpec) -> SeedSpec:
    """Declare the facility's catalogue entries; the caller commits."""
    if not isinstance(spec, SeedSpec):
        try:
            spec = SeedSpec.model_validate(spec)
        except PydanticValidationError as exc:
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise BadRequest("invalid seed: " + "; ".join(problems)) from exc
    for name in spec.detector_types:
        ensure_detector_type(s, name)
    for name in spec.calibrations:
        ensure_calibration(s, name)
    for p in spec.parameters:
        ensure_parameter(s, p.name, p.lower, p.upper, p.unit)
    for d in spec.detectors:
        ensure_detector(s, **d.model_dump())
    for u in spec.pdus:
        ensure_pdu(s, u.physical_name, u.detector_type, u.uuid)
    for m in spec.mappings:
        map_pdu(s, **m.model_dump())
    return spec
