"""A calibration-DB seed for one detector: what `runbook dark` needs before it can inject.

The facility's DB already knows its detectors and physical detector units (PDUs). A fresh
store (the twin, a test, a lab) does not, and an injection for an unknown module is
refused. ``dark_seed`` declares the detector, one PDU per module mapped from ``since``,
the dark calibrations and the condition parameters, in `runbook caldb seed`'s format.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from detectors import DetectorType

__all__ = ["dark_seed", "pdu_name"]


def pdu_name(karabo_id: str, karabo_da: str) -> str:
    """A made-up PDU name for a module of a detector that has no real one."""
    return f"{karabo_id}_{karabo_da}"


def dark_seed(det: DetectorType, karabo_id: str, modules: Iterable[int], since: datetime,
              *, pdus: Mapping[int, str] | None = None,
              deviations: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """The seed declaring ``karabo_id`` with PDUs for ``modules`` installed from ``since``.

    ``pdus`` names real PDUs per module; ``deviations`` gives (lower, upper) per CalCat
    parameter name (default 0: exact match).
    """
    mods = list(modules)
    names = {m: (pdus or {}).get(m) or pdu_name(karabo_id, det.karabo_da(m)) for m in mods}
    devs = deviations or {}
    return {
        "detector_types": [det.calcat_type],
        "calibrations": list(det.dark_constants),
        "parameters": [
            {"name": p.name, "lower": devs.get(p.name, (0.0, 0.0))[0],
             "upper": devs.get(p.name, (0.0, 0.0))[1]}
            for p in det.dark_parameters
        ],
        "detectors": [{"identifier": karabo_id, "name": karabo_id,
                       "number_of_modules": det.max_modules,
                       "first_module_index": det.raw.first_module}],
        "pdus": [{"physical_name": names[m], "detector_type": det.calcat_type} for m in mods],
        "mappings": [
            {"pdu": names[m], "detector": karabo_id, "karabo_da": det.karabo_da(m),
             "virtual_device_name": det.module_label(m), "module_number": m,
             "begin_at": since}
            for m in mods
        ],
    }
