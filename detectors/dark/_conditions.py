"""Operating conditions of a dark characterization: options, then the data, then defaults.

Order of precedence for each parameter: a value given on the command line
(``--condition sensor_bias_voltage=200``), a value read from the runs (memory cells from the
cell ids, the AGIPD acquisition rate from the pulseId step), then the documented default
below. The result goes through ``DetectorType.conditions`` so names, casing and the
drop rules are CalCat's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from detectors import ConditionsError, DetectorType
from detectors.dark._runs import DarkRuns
from detectors.dark.errors import DarkError

__all__ = ["DEFAULTS", "parse_conditions", "dark_conditions"]

#: defaults when neither an option nor the data give a value (the facility's dark
#: notebooks' defaults: AGIPD 300 V, gain setting 0 (high CDS gain), fixed-gain darks
#: taken in adaptive mode 0; JUNGFRAU 180 V, 10 µs, dynamic gain)
DEFAULTS: Mapping[str, Mapping[str, float]] = {
    "AGIPD": {"sensor_bias_voltage": 300.0, "gain_setting": 0.0, "gain_mode": 0.0,
              "integration_time": 12.0},
    "JUNGFRAU": {"sensor_bias_voltage": 180.0, "integration_time": 10.0, "gain_setting": 0.0,
                 "gain_mode": 0.0},
}


def parse_conditions(items: Sequence[str]) -> dict[str, float | str]:
    """``["sensor_bias_voltage=200", ...]`` -> ``{"sensor_bias_voltage": 200.0}``.

    Values are numbers except where a parameter is text (LPD's memory cell order), which
    ``DetectorType.conditions`` checks later. Every malformed item is reported together.
    """
    out: dict[str, float | str] = {}
    problems = []
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            problems.append(f"{item!r}: expected name=value, e.g. sensor_bias_voltage=300")
            continue
        try:
            out[name] = float(value)
        except ValueError:
            out[name] = value
    if problems:
        raise DarkError("bad --condition: " + "; ".join(problems))
    return out


def dark_conditions(det: DetectorType, runs: DarkRuns,
                    given: Mapping[str, float | str] | None = None) -> dict[str, float | str]:
    """CalCat conditions ``{name: value}`` for the constants of this characterization."""
    values: dict[str, object] = dict(DEFAULTS.get(det.name, {}))
    values["memory_cells"] = float(runs.n_cells)
    if det.name == "AGIPD" and runs.acquisition_rate is not None:
        values["acquisition_rate"] = runs.acquisition_rate
    values.update(given or {})
    try:
        return det.conditions(**values)
    except ConditionsError as exc:
        raise DarkError(f"{exc} (give them with --condition name=value)") from exc
