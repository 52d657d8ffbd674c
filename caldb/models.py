"""The tables of the calibration catalogue, named as CalCat names them.

Table and column names follow CalCat and its clients (calibration_client, EXtra), so that
the REST server can hand rows out in the shapes those clients read, and a person who knows
the facility's database backend (section 7) finds the same fields here. Two additions:
``pdu_mappings`` holds the time-dependent mapping of a PDU to a detector's module, and
``version_flag_changes`` is the audit log of disabling and enabling versions.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

__all__ = [
    "Base",
    "UTCDateTime",
    "DetectorType",
    "Detector",
    "PhysicalDetectorUnit",
    "PduMapping",
    "Calibration",
    "Parameter",
    "Condition",
    "ParameterCondition",
    "CalibrationConstant",
    "CalibrationConstantVersion",
    "Report",
    "VersionFlagChange",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend.

    SQLite has no time zones and PostgreSQL's ``timestamptz`` returns the session's zone;
    storing naive UTC and re-attaching UTC on the way out makes comparisons and equality
    identical on both. Naive input is refused: a time without a zone is ambiguous.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} (give a time zone)")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    """Declarative base of the catalogue; ``Base.metadata.create_all(engine)`` makes it."""


def _now() -> datetime:
    return datetime.now(UTC)


class DetectorType(Base):
    __tablename__ = "detector_types"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Detector(Base):
    __tablename__ = "detectors"

    id: Mapped[int] = mapped_column(primary_key=True)
    identifier: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    karabo_name: Mapped[str] = mapped_column(String(100), default="")
    karabo_id_control: Mapped[str] = mapped_column(String(100), default="")
    number_of_modules: Mapped[int] = mapped_column(Integer, default=1)
    first_module_index: Mapped[int] = mapped_column(Integer, default=0)
    source_name_pattern: Mapped[str] = mapped_column(String(200), default="")
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")


class PhysicalDetectorUnit(Base):
    __tablename__ = "physical_detector_units"

    id: Mapped[int] = mapped_column(primary_key=True)
    physical_name: Mapped[str] = mapped_column(String(100), unique=True)
    uuid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detector_type_id: Mapped[int] = mapped_column(ForeignKey("detector_types.id"))
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")

    detector_type: Mapped[DetectorType] = relationship()


class PduMapping(Base):
    """A PDU installed as one module (karabo_da) of a detector during [begin_at, end_at)."""

    __tablename__ = "pdu_mappings"

    id: Mapped[int] = mapped_column(primary_key=True)
    physical_detector_unit_id: Mapped[int] = mapped_column(
        ForeignKey("physical_detector_units.id"), index=True
    )
    detector_id: Mapped[int] = mapped_column(ForeignKey("detectors.id"), index=True)
    karabo_da: Mapped[str] = mapped_column(String(50))
    virtual_device_name: Mapped[str] = mapped_column(String(50), default="")
    module_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    begin_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    pdu: Mapped[PhysicalDetectorUnit] = relationship()
    detector: Mapped[Detector] = relationship()


class Calibration(Base):
    __tablename__ = "calibrations"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")


class Parameter(Base):
    __tablename__ = "parameters"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    unit: Mapped[str] = mapped_column(String(30), default="")
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    flg_logarithmic: Mapped[bool] = mapped_column(Boolean, default=False)
    def_lower_deviation_value: Mapped[float] = mapped_column(Float, default=0.0)
    def_upper_deviation_value: Mapped[float] = mapped_column(Float, default=0.0)
    description: Mapped[str] = mapped_column(Text, default="")


class Condition(Base):
    """A set of parameter conditions; ``name`` is a digest of the set, so equal sets share a row."""

    __tablename__ = "conditions"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    event_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    description: Mapped[str] = mapped_column(Text, default="")

    parameters_conditions: Mapped[list[ParameterCondition]] = relationship(
        back_populates="condition", cascade="all, delete-orphan"
    )


class ParameterCondition(Base):
    __tablename__ = "parameters_conditions"
    __table_args__ = (UniqueConstraint("condition_id", "parameter_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    condition_id: Mapped[int] = mapped_column(ForeignKey("conditions.id"), index=True)
    parameter_id: Mapped[int] = mapped_column(ForeignKey("parameters.id"))
    value: Mapped[float] = mapped_column(Float)
    lower_deviation_value: Mapped[float] = mapped_column(Float, default=0.0)
    upper_deviation_value: Mapped[float] = mapped_column(Float, default=0.0)
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")

    condition: Mapped[Condition] = relationship(back_populates="parameters_conditions")
    parameter: Mapped[Parameter] = relationship()


class CalibrationConstant(Base):
    __tablename__ = "calibration_constants"
    __table_args__ = (UniqueConstraint("detector_type_id", "calibration_id", "condition_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    detector_type_id: Mapped[int] = mapped_column(ForeignKey("detector_types.id"))
    calibration_id: Mapped[int] = mapped_column(ForeignKey("calibrations.id"))
    condition_id: Mapped[int] = mapped_column(ForeignKey("conditions.id"))
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    flg_auto_approve: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")

    detector_type: Mapped[DetectorType] = relationship()
    calibration: Mapped[Calibration] = relationship()
    condition: Mapped[Condition] = relationship()


class Report(Base):
    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file_path: Mapped[str] = mapped_column(String(500), unique=True)
    flg_available: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")


class CalibrationConstantVersion(Base):
    """One injected constant: a file in the store plus the metadata that finds it.

    The unique constraint is the database's half of "Version already taken": one PDU,
    one constant (type, calibration, condition) and one start date give one version.
    """

    __tablename__ = "calibration_constant_versions"
    __table_args__ = (
        UniqueConstraint("physical_detector_unit_id", "calibration_constant_id", "begin_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    file_name: Mapped[str] = mapped_column(String(200))
    path_to_file: Mapped[str] = mapped_column(String(500))
    data_set_name: Mapped[str] = mapped_column(String(300))
    calibration_constant_id: Mapped[int] = mapped_column(
        ForeignKey("calibration_constants.id"), index=True
    )
    physical_detector_unit_id: Mapped[int] = mapped_column(
        ForeignKey("physical_detector_units.id"), index=True
    )
    flg_deployed: Mapped[bool] = mapped_column(Boolean, default=True)
    flg_good_quality: Mapped[bool] = mapped_column(Boolean, default=True)
    begin_validity_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_validity_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    begin_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    start_idx: Mapped[int] = mapped_column(Integer, default=0)
    end_idx: Mapped[int] = mapped_column(Integer, default=0)
    raw_data_location: Mapped[str] = mapped_column(String(500), default="")
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)

    calibration_constant: Mapped[CalibrationConstant] = relationship()
    physical_detector_unit: Mapped[PhysicalDetectorUnit] = relationship()
    report: Mapped[Report | None] = relationship()


class VersionFlagChange(Base):
    """Audit row for section 7: who changed which version's flags, when, why, from what."""

    __tablename__ = "version_flag_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    calibration_constant_version_id: Mapped[int] = mapped_column(
        ForeignKey("calibration_constant_versions.id"), index=True
    )
    action: Mapped[str] = mapped_column(String(20))
    who: Mapped[str] = mapped_column(String(100))
    why: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=_now)
    old_deployed: Mapped[bool] = mapped_column(Boolean)
    old_good_quality: Mapped[bool] = mapped_column(Boolean)
    new_deployed: Mapped[bool] = mapped_column(Boolean)
    new_good_quality: Mapped[bool] = mapped_column(Boolean)
