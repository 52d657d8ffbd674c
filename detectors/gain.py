"""Gain-stage decoding that needs more than the word itself (AGIPD thresholds).

Word-level decoding (LPD and JUNGFRAU gain bits) is `DetectorType.gain.stage(raw)` and
`.adc(raw)`; this module adds the threshold rule of the AGIPD digital plane and the
JUNGFRAU helper that rebuilds the 16-bit word from the separate `data.gain` key.
"""

from __future__ import annotations

import numpy as np

__all__ = ["stage_from_digital", "jungfrau_word"]


def stage_from_digital(digital: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """AGIPD gain stage per pixel: 0 below thresholds[0], 1 below thresholds[1], else 2.

    `thresholds` has a leading axis of 2 (HG/MG and MG/LG boundaries, as in
    ThresholdsDark) and broadcasts against `digital`.
    """
    thresholds = np.asarray(thresholds)
    if thresholds.shape[:1] != (2,):
        raise ValueError(f"thresholds need a leading axis of 2, not shape {thresholds.shape}")
    digital = np.asarray(digital)
    stage = (digital > thresholds[0]).astype(np.uint8)
    stage += digital > thresholds[1]
    return stage


def jungfrau_word(adc: np.ndarray, gain_bits: np.ndarray) -> np.ndarray:
    """The JUNGFRAU 16-bit word: the 2 gain bits (0, 1 or 3) above the 14-bit ADC value."""
    adc = np.asarray(adc, dtype=np.uint16)
    bits = np.asarray(gain_bits, dtype=np.uint16)
    if bits.size and bits.max() > 3:
        raise ValueError("JUNGFRAU gain bits must be 0..3")
    return (bits << np.uint16(14)) | (adc & np.uint16(0x3FFF))
