"""Section 7: disabling faulty versions by clearing *deployed* and *good quality*, and back.

Every change writes an audit row in the same transaction as the flags, so a flag change
without its who/why/when cannot exist. Enabling sets both flags again; it is the way
back from a disable, and it is audited the same way. Inside a plan or diagnose walk of the
runbook engine a flag change raises ``MutationRefused`` before anything is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from caldb._time import now
from caldb.errors import BadRequest
from caldb.models import VersionFlagChange
from caldb.versions import get_version
from engine.registry import guard_transport

__all__ = ["FlagChange", "set_enabled", "flag_changes"]


@dataclass(frozen=True)
class FlagChange:
    """One audit entry; ``CalDB.audit()`` returns them."""

    id: int
    ccv_id: int
    action: str
    who: str
    why: str
    at: datetime
    old_deployed: bool
    old_good_quality: bool
    new_deployed: bool
    new_good_quality: bool


def _change(row: VersionFlagChange) -> FlagChange:
    return FlagChange(
        id=row.id,
        ccv_id=row.calibration_constant_version_id,
        action=row.action,
        who=row.who,
        why=row.why,
        at=row.at,
        old_deployed=row.old_deployed,
        old_good_quality=row.old_good_quality,
        new_deployed=row.new_deployed,
        new_good_quality=row.new_good_quality,
    )


def set_enabled(s: Session, ccv_id: int, enabled: bool, who: str, why: str) -> FlagChange:
    """Set both flags of one version to ``enabled`` and log it; the caller commits."""
    guard_transport(f"{'enable' if enabled else 'disable'} calibration constant version {ccv_id}")
    if not who or not who.strip():
        raise BadRequest("say who changes the flags (--who or $USER)")
    if not why or not why.strip():
        raise BadRequest("say why the flags change (--why)")
    row = get_version(s, ccv_id)
    audit = VersionFlagChange(
        calibration_constant_version_id=row.id,
        action="enable" if enabled else "disable",
        who=who.strip(),
        why=why.strip(),
        at=now(),
        old_deployed=row.flg_deployed,
        old_good_quality=row.flg_good_quality,
        new_deployed=enabled,
        new_good_quality=enabled,
    )
    row.flg_deployed = enabled
    row.flg_good_quality = enabled
    s.add(audit)
    s.flush()
    return _change(audit)


def flag_changes(s: Session, ccv_id: int | None = None) -> list[FlagChange]:
    query = select(VersionFlagChange).order_by(VersionFlagChange.id)
    if ccv_id is not None:
        query = query.where(VersionFlagChange.calibration_constant_version_id == ccv_id)
    return [_change(r) for r in s.scalars(query)]
