"""Whole dark characterizations: three gain runs in, the facility's dark constants out.

These are what ``runbook dark`` calls: AGIPD gives Offset, Noise, ThresholdsDark and
BadPixelsDark; JUNGFRAU gives Offset, Noise and BadPixelsDark. Each is computed per gain
stage, memory cell and pixel, in the layout ``[gain, cells, x, y]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ._badpix import agipd_thresholds, bad_pixels_dark
from ._dark import agipd_dark_stats, dark_stats
from ._flags import BadPixels, KernelInputError

__all__ = ["DarkSettings", "DarkConstants", "characterize_agipd_dark",
           "characterize_jungfrau_dark"]

Range = tuple[float, float] | None


@dataclass(frozen=True)
class DarkSettings:
    """Cuts for BadPixelsDark; ``DarkSettings()`` gives AGIPD-like defaults.

    Hard ranges are per gain stage (high, medium, low); None means no hard cut.
    """

    offset_sigma: float = 3.0
    noise_sigma: float = 5.0
    offset_range: tuple[Range, Range, Range] = ((3000, 7000), (6000, 10000), (6000, 10000))
    noise_range: tuple[Range, Range, Range] = ((4, 20), (4, 20), (4, 20))
    gain_sigma: float = 5.0
    median: bool = True


JUNGFRAU_SETTINGS = DarkSettings(offset_sigma=5.0, noise_sigma=5.0,
                                 offset_range=(None, None, None),
                                 noise_range=(None, None, None))


@dataclass(frozen=True)
class DarkConstants:
    """Dark constants ``[3 gains, cells, x, y]``; ``thresholds`` is ``[5, cells, x, y]``
    for AGIPD and None for JUNGFRAU. Get one from a ``characterize_*`` function."""

    offset: np.ndarray
    noise: np.ndarray
    bad_pixels: np.ndarray
    thresholds: np.ndarray | None
    cells: np.ndarray


def characterize_agipd_dark(runs: Sequence[np.ndarray], cells: np.ndarray | None = None, *,
                            settings: DarkSettings = DarkSettings()) -> DarkConstants:
    """Three runs ``uint16[trains, cells, 2, x, y]`` (high, medium, low gain) -> constants.

    Use ``agipd_raw_by_train`` to get that layout from raw frames and their cellId.
    """
    if len(runs) != 3:
        raise KernelInputError(f"AGIPD dark needs 3 runs (high, medium, low), got {len(runs)}")
    shapes = {r.shape[1:] for r in runs}
    if len(shapes) != 1:
        raise KernelInputError(f"the 3 runs differ in cells or pixels: {sorted(shapes)}")
    offset, noise, bp, dig_med, dig_std = [], [], [], [], []
    for g, run in enumerate(runs):
        analog, digital = agipd_dark_stats(run, median=settings.median)
        offset.append(analog.offset)
        noise.append(analog.noise)
        bp.append(bad_pixels_dark(analog.offset, analog.noise, count=analog.count,
                                  offset_sigma=settings.offset_sigma,
                                  noise_sigma=settings.noise_sigma,
                                  offset_range=settings.offset_range[g],
                                  noise_range=settings.noise_range[g]))
        dig_med.append(digital.offset)
        dig_std.append(digital.noise)
    thresholds, gain_flags = agipd_thresholds(np.stack(dig_med), np.stack(dig_std),
                                              sigma=settings.gain_sigma)
    bad = np.stack(bp) | gain_flags[np.newaxis]
    n_c = runs[0].shape[1]
    return DarkConstants(np.stack(offset), np.stack(noise), bad, thresholds,
                         np.arange(n_c) if cells is None else np.asarray(cells))


def characterize_jungfrau_dark(runs: Sequence[np.ndarray], cells: np.ndarray | None = None, *,
                               settings: DarkSettings = JUNGFRAU_SETTINGS) -> DarkConstants:
    """Three runs ``uint16[trains, cells, x, y]`` taken in gain 0, 1, 2 -> constants.

    Samples whose gain bits are not the run's are left out and flag WRONG_GAIN_VALUE.
    """
    if len(runs) != 3:
        raise KernelInputError(f"JUNGFRAU dark needs 3 runs (G0, G1, G2), got {len(runs)}")
    shapes = {r.shape[1:] for r in runs}
    if len(shapes) != 1:
        raise KernelInputError(f"the 3 runs differ in cells or pixels: {sorted(shapes)}")
    offset, noise, bp = [], [], []
    for g, run in enumerate(runs):
        st = dark_stats(run, median=settings.median, adc_bits=14, gain_stage=g)
        flags = bad_pixels_dark(st.offset, st.noise, count=st.count,
                                offset_sigma=settings.offset_sigma,
                                noise_sigma=settings.noise_sigma,
                                offset_range=settings.offset_range[g],
                                noise_range=settings.noise_range[g])
        flags[st.rejected > 0] |= np.uint32(BadPixels.WRONG_GAIN_VALUE)
        offset.append(st.offset)
        noise.append(st.noise)
        bp.append(flags)
    n_c = runs[0].shape[1]
    return DarkConstants(np.stack(offset), np.stack(noise), np.stack(bp), None,
                         np.arange(n_c) if cells is None else np.asarray(cells))
