"""Numba kernels for dark characterization and correction, behind numpy-shaped functions.

Only numpy, numba and the standard library are imported here (a test checks it). Every
function takes and returns numpy arrays; shapes are in each docstring, with the
convention ``[trains, cells, *pixels]`` for dark runs and ``[gain, cells, *pixels]`` for
constants. Bad input raises ``KernelInputError`` (a ValueError).
"""

from ._badpix import agipd_thresholds, bad_pixels_dark
from ._characterize import (
    JUNGFRAU_SETTINGS,
    DarkConstants,
    DarkSettings,
    characterize_agipd_dark,
    characterize_jungfrau_dark,
)
from ._common_mode import ccd_dark, common_mode
from ._correct import (
    AgipdCorrectionConstants,
    JungfrauCorrectionConstants,
    correct_agipd,
    correct_jungfrau,
    pack_agipd_constants,
    pack_jungfrau_constants,
)
from ._dark import (
    DarkAccumulator,
    DarkStats,
    agipd_dark_stats,
    agipd_raw_by_train,
    dark_mean_std,
    dark_offset_noise,
    dark_stats,
)
from ._flags import BadPixels, KernelInputError

__all__ = [
    "AgipdCorrectionConstants",
    "BadPixels",
    "DarkAccumulator",
    "DarkConstants",
    "DarkSettings",
    "DarkStats",
    "JUNGFRAU_SETTINGS",
    "JungfrauCorrectionConstants",
    "KernelInputError",
    "agipd_dark_stats",
    "agipd_raw_by_train",
    "agipd_thresholds",
    "bad_pixels_dark",
    "ccd_dark",
    "characterize_agipd_dark",
    "characterize_jungfrau_dark",
    "common_mode",
    "correct_agipd",
    "correct_jungfrau",
    "dark_mean_std",
    "dark_offset_noise",
    "dark_stats",
    "pack_agipd_constants",
    "pack_jungfrau_constants",
]
