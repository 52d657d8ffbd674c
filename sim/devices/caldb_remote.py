"""calibrationDbRemote access points (11.3, 12): answer constant queries.

Until the calibration DB of a later issue exists, the access points look constants up in
an in-twin table, a JSON file per instrument (``constantsFile``), with the facility's
matching rule: a constant matches when each of its conditions equals the requested value
(numbers compared as numbers); a requested parameter that the constant does not have must
be empty; "None" matches nothing.  The file is re-read on every query, so editing it
(a scenario fault) changes answers at once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from karabo.middlelayer import AccessMode, Hash, Overwrite, State, String, UInt32, slot

from ._base import TwinDevice

__all__ = ["TwinCalDbRemote", "match_constant", "lookup"]


def _equal(requested: str, stored: Any) -> bool:
    if requested.strip() in ("", "None"):
        return False
    try:
        return abs(float(requested) - float(stored)) < 1e-6
    except (TypeError, ValueError):
        return requested.strip() == str(stored).strip()


def match_constant(entry: dict[str, Any], conditions: dict[str, str]) -> bool:
    stored: dict[str, Any] = entry.get("conditions", {})
    for key, value in stored.items():
        if not _equal(conditions.get(key, ""), value):
            return False
    return all(key in stored or value.strip() == "" for key, value in conditions.items())


def lookup(table: list[dict[str, Any]], physical_device: str, constant: str,
           conditions: dict[str, str]) -> dict[str, Any] | None:
    """The newest matching constant, or None."""
    found = [e for e in table
             if e.get("physical_device") == physical_device and e.get("constant") == constant
             and match_constant(e, conditions)]
    return max(found, key=lambda e: str(e["begin_validity"]), default=None)


class TwinCalDbRemote(TwinDevice):
    """One access point (``<SASE>_DAQ_DATA/DM/CAL_REMOTE_<n>``)."""

    state = Overwrite(defaultValue=State.ON, options=[State.ON, State.ERROR])
    constantsFile = String(displayedName="Constants table", defaultValue="",
                           accessMode=AccessMode.INITONLY)
    requests = UInt32(displayedName="Requests served", defaultValue=0,
                      accessMode=AccessMode.READONLY)

    @slot
    def getConstant(self, request: Hash) -> Hash:
        self.requests = int(self.requests) + 1
        self.say("INFO", "Waiting on data")
        self.say("INFO", "Start searching in Calibration Catalogue...")
        conditions = {k: str(v) for k, v in request["conditions"].items()}
        try:
            table = json.loads(Path(str(self.constantsFile)).read_text())
        except (OSError, ValueError) as exc:
            self.say("ERROR", f"cannot read the calibration catalogue: {exc}")
            return Hash("found", False, "reason", f"catalogue unreadable: {exc}", "date", "")
        entry = lookup(table, str(request["physicalDevice"]), str(request["constant"]),
                       conditions)
        if entry is None:
            self.say("INFO", f"No calibration {request['constant']} "
                             f"({request['physicalDevice']}) for these conditions")
            return Hash("found", False, "reason",
                        "no constant matches the operating conditions", "date", "")
        self.say("INFO", f"Got calibration: {request['constant']} "
                         f"({request['physicalDevice']}), meta_only: True")
        return Hash("found", True, "reason", "", "date", str(entry["begin_validity"]))
