"""The facility's bad-pixel bit values, so masks we write mean the same as the facility's.

Values match ``cal_tools.enums.BadPixels`` / ``extra.calibration.BadPixels`` bit for bit:
a constant injected by this project must be readable by the facility's correction.
"""

from __future__ import annotations

from enum import IntFlag

__all__ = ["BadPixels", "KernelInputError"]


class BadPixels(IntFlag):
    """Reasons why a pixel is bad; zero means good. Use as ``BadPixels.NO_DARK_DATA``."""

    OFFSET_OUT_OF_THRESHOLD = 1 << 0
    NOISE_OUT_OF_THRESHOLD = 1 << 1
    OFFSET_NOISE_EVAL_ERROR = 1 << 2
    NO_DARK_DATA = 1 << 3
    CI_GAIN_OF_OF_THRESHOLD = 1 << 4
    CI_LINEAR_DEVIATION = 1 << 5
    CI_EVAL_ERROR = 1 << 6
    FF_GAIN_EVAL_ERROR = 1 << 7
    FF_GAIN_DEVIATION = 1 << 8
    FF_NO_ENTRIES = 1 << 9
    CI2_EVAL_ERROR = 1 << 10
    VALUE_IS_NAN = 1 << 11
    VALUE_OUT_OF_RANGE = 1 << 12
    GAIN_THRESHOLDING_ERROR = 1 << 13
    DATA_STD_IS_ZERO = 1 << 14
    ASIC_STD_BELOW_NOISE = 1 << 15
    INTERPOLATED = 1 << 16
    NOISY_ADC = 1 << 17
    OVERSCAN = 1 << 18
    NON_SENSITIVE = 1 << 19
    NON_LIN_RESPONSE_REGION = 1 << 20
    WRONG_GAIN_VALUE = 1 << 21
    NON_STANDARD_SIZE = 1 << 22


class KernelInputError(ValueError):
    """An array handed to a kernel has the wrong shape, dtype or values.

    Kernels may import only numpy and numba, so this derives from ValueError; callers in
    the engine translate it into their own error type at their boundary.
    """
