"""Finding the version a correction should use: by module, conditions and event time.

Steps, each one a rule documented in docs/caldb.md:

1. Modules: the PDUs mapped to the detector at ``pdu_snapshot_at`` (default: the event
   time), optionally only one karabo_da; or one PDU named directly.
2. Candidates: versions of those PDUs for the requested calibrations whose condition
   matches (``conditions.matching_condition_ids``) and that are both deployed and of good
   quality. Disabled versions (section 7) are invisible here.
3. Choice per (module, calibration): ``prior`` takes the latest ``begin_at <= event_at``;
   ``closest`` takes the smallest ``|event_at - begin_at|``, and on a tie the earlier one
   (the constant that already existed at the event). Versions with the same ``begin_at``
   are ordered by id: the later injection wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from caldb._time import require_aware
from caldb.catalogue import (
    calibration_by_name,
    mapping_of_pdu_at,
    modules_at,
    parameters_by_name,
    pdu_by_name,
)
from caldb.conditions import Conditions, check_conditions, matching_condition_ids
from caldb.errors import BadRequest, UnknownName
from caldb.models import CalibrationConstant, CalibrationConstantVersion
from caldb.versions import VersionInfo, version_info

__all__ = ["Strategy", "STRATEGIES", "find_versions", "choose"]

Strategy = Literal["closest", "prior"]
STRATEGIES: tuple[str, ...] = ("closest", "prior")


def choose(
    begin_ats: Sequence[tuple[datetime, int]], event_at: datetime, strategy: str
) -> int | None:
    """Index of the chosen ``(begin_at, id)`` under ``strategy``, or None."""
    prior = [(b, i, k) for k, (b, i) in enumerate(begin_ats) if b <= event_at]
    after = [(b, i, k) for k, (b, i) in enumerate(begin_ats) if b > event_at]
    best_prior = max(prior, key=lambda t: (t[0], t[1]), default=None)
    if strategy == "prior":
        return None if best_prior is None else best_prior[2]
    best_after = min(after, key=lambda t: (t[0], -t[1]), default=None)
    if best_prior is None or best_after is None:
        pick = best_prior or best_after
        return None if pick is None else pick[2]
    if best_after[0] - event_at < event_at - best_prior[0]:
        return best_after[2]
    return best_prior[2]


def find_versions(
    s: Session,
    *,
    calibrations: Sequence[str],
    conditions: Conditions,
    event_at: datetime,
    detector: str | None = None,
    karabo_da: str | None = None,
    pdu: str | None = None,
    strategy: str = "closest",
    pdu_snapshot_at: datetime | None = None,
) -> list[VersionInfo]:
    """One version per (module, calibration) that has one, sorted by karabo_da and name.

    Give ``detector`` (all modules, or one with ``karabo_da``), or ``pdu`` alone.
    An empty list means nothing matched; unknown names raise ``UnknownName``.
    """
    if strategy not in STRATEGIES:
        raise BadRequest(f"begin_at strategy {strategy!r}: expected one of {', '.join(STRATEGIES)}")
    if not calibrations:
        raise BadRequest("name at least one calibration")
    event_at = require_aware(event_at, "event_at")
    snapshot = (
        event_at if pdu_snapshot_at is None else require_aware(pdu_snapshot_at, "pdu_snapshot_at")
    )
    vals = check_conditions(conditions)

    modules: dict[int, str | None] = {}
    if pdu is not None:
        if detector is not None or karabo_da is not None:
            raise BadRequest("give either a PDU or a detector (with an optional karabo_da)")
        unit = pdu_by_name(s, pdu)
        mapping = mapping_of_pdu_at(s, unit.id, snapshot)
        modules[unit.id] = None if mapping is None else mapping.karabo_da
    elif detector is not None:
        for m in modules_at(s, detector, snapshot, karabo_da):
            modules[m.physical_detector_unit_id] = m.karabo_da
        if not modules:
            raise UnknownName(f"no PDU is mapped to detector {detector} at {snapshot.isoformat()}")
    else:
        raise BadRequest("give a detector (karabo_id) or a PDU")

    parameters_by_name(s, list(vals))
    cal_ids = {calibration_by_name(s, name).id: name for name in dict.fromkeys(calibrations)}
    ccv, cc = CalibrationConstantVersion, CalibrationConstant
    rows = s.execute(
        select(ccv, cc.calibration_id)
        .join(cc, ccv.calibration_constant_id == cc.id)
        .where(
            cc.calibration_id.in_(list(cal_ids)),
            cc.condition_id.in_(matching_condition_ids(vals)),
            ccv.physical_detector_unit_id.in_(list(modules)),
            ccv.flg_deployed.is_(True),
            ccv.flg_good_quality.is_(True),
        )
    ).all()

    groups: dict[tuple[int, int], list[CalibrationConstantVersion]] = {}
    for version, cal_id in rows:
        groups.setdefault((version.physical_detector_unit_id, cal_id), []).append(version)
    found: list[VersionInfo] = []
    for (pdu_id, _cal_id), versions in groups.items():
        k = choose([(v.begin_at, v.id) for v in versions], event_at, strategy)
        if k is not None:
            found.append(version_info(s, versions[k], karabo_da=modules[pdu_id]))
    found.sort(key=lambda v: (v.karabo_da or "", v.physical_name, v.calibration))
    return found
