"""Detector types (AGIPD, LPD, DSSC, JUNGFRAU, ePix100, pnCCD, FastCCD) and raw-data access.

`get_detector_type(name)` gives a frozen `DetectorType`: geometry, raw source names and
keys, gain encoding, dark constants and operating conditions (`.conditions(**values)`).
`read_dark_module` and `run_sources` read raw runs through EXtra-data.
"""

from detectors.errors import ConditionsError, DetectorError, RawDataError, UnknownDetectorType
from detectors.gain import jungfrau_word, stage_from_digital
from detectors.model import ConditionParameter, DetectorType, GainEncoding, RawLayout
from detectors.rawdata import ModuleFrames, open_detector, open_run, read_dark_module, run_sources
from detectors.registry import DETECTOR_TYPES, get_detector_type
from detectors.types import AGIPD, DSSC, EPIX100, FASTCCD, JUNGFRAU, LPD, PNCCD

__all__ = [
    "AGIPD",
    "DSSC",
    "EPIX100",
    "FASTCCD",
    "JUNGFRAU",
    "LPD",
    "PNCCD",
    "DETECTOR_TYPES",
    "ConditionParameter",
    "ConditionsError",
    "DetectorError",
    "DetectorType",
    "GainEncoding",
    "ModuleFrames",
    "RawDataError",
    "RawLayout",
    "UnknownDetectorType",
    "get_detector_type",
    "jungfrau_word",
    "open_detector",
    "open_run",
    "read_dark_module",
    "run_sources",
    "stage_from_digital",
]
