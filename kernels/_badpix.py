"""Bad-pixel flags from dark results, and AGIPD gain thresholds from the digital values.

The σ cuts are around the module median of each memory cell, with the module's standard
deviation (both over finite pixels only), as the facility's dark notebooks do; hard
ranges are absolute, per gain. Flags are the facility's ``BadPixels`` bits.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._flags import BadPixels, KernelInputError

__all__ = ["bad_pixels_dark", "agipd_thresholds"]

_OFFSET_OUT = np.uint32(BadPixels.OFFSET_OUT_OF_THRESHOLD)
_NOISE_OUT = np.uint32(BadPixels.NOISE_OUT_OF_THRESHOLD)
_EVAL_ERROR = np.uint32(BadPixels.OFFSET_NOISE_EVAL_ERROR)
_NO_DATA = np.uint32(BadPixels.NO_DARK_DATA)
_STD_ZERO = np.uint32(BadPixels.DATA_STD_IS_ZERO)
_GAIN_ERROR = np.uint32(BadPixels.GAIN_THRESHOLDING_ERROR)


@njit(cache=True)
def _finite_median_std(values, buf):
    k = 0
    for v in values:
        if np.isfinite(v):
            buf[k] = v
            k += 1
    if k == 0:
        return np.nan, np.nan
    x = buf[:k]
    return np.median(x), np.std(x)


@njit(cache=True, parallel=True)
def _flag_kernel(offset, noise, count, has_count, o_sigma, n_sigma, o_lo, o_hi, n_lo, n_hi,
                 out):
    n_c, n_p = offset.shape
    for c in prange(n_c):
        buf = np.empty(n_p, np.float64)
        o_med, o_std = _finite_median_std(offset[c], buf)
        n_med, n_std = _finite_median_std(noise[c], buf)
        for i in range(n_p):
            o = np.float64(offset[c, i])
            s = np.float64(noise[c, i])
            f = np.uint32(0)
            if not (np.isfinite(o) and np.isfinite(s)):
                f |= _EVAL_ERROR
            if abs(o - o_med) > o_sigma * o_std or o < o_lo or o > o_hi:
                f |= _OFFSET_OUT
            if abs(s - n_med) > n_sigma * n_std or s < n_lo or s > n_hi:
                f |= _NOISE_OUT
            if s == 0.0:
                f |= _STD_ZERO
            if has_count and count[c, i] == 0:
                f |= _NO_DATA
            out[c, i] = f


def _range(r: tuple[float, float] | None, name: str) -> tuple[float, float]:
    if r is None:
        return -math.inf, math.inf
    lo, hi = float(r[0]), float(r[1])
    if not lo <= hi:
        raise KernelInputError(f"{name} must be (low, high) with low <= high, got {r!r}")
    return lo, hi


def bad_pixels_dark(offset: np.ndarray, noise: np.ndarray, *, count: np.ndarray | None = None,
                    offset_sigma: float = 3.0, noise_sigma: float = 5.0,
                    offset_range: tuple[float, float] | None = None,
                    noise_range: tuple[float, float] | None = None) -> np.ndarray:
    """BadPixelsDark uint32[cells, *pixels] for one gain stage.

    ``offset`` and ``noise`` are ``[cells, *pixels]``; a pixel is flagged
    OFFSET_OUT_OF_THRESHOLD (NOISE_...) when it is more than ``offset_sigma`` (``noise_sigma``)
    module standard deviations from the module median of its cell, or outside the hard
    ``offset_range`` (``noise_range``); OFFSET_NOISE_EVAL_ERROR when either is not finite;
    DATA_STD_IS_ZERO when noise is 0; NO_DARK_DATA where ``count`` is 0.
    """
    offset = np.asarray(offset)
    noise = np.asarray(noise)
    if offset.shape != noise.shape or offset.ndim < 2:
        raise KernelInputError(
            f"offset {offset.shape} and noise {noise.shape} must be the same [cells, *pixels]")
    if count is not None and np.shape(count) != offset.shape:
        raise KernelInputError(f"count {np.shape(count)} must have shape {offset.shape}")
    if not (offset_sigma > 0 and noise_sigma > 0):
        raise KernelInputError("offset_sigma and noise_sigma must be positive")
    o_lo, o_hi = _range(offset_range, "offset_range")
    n_lo, n_hi = _range(noise_range, "noise_range")
    n_c = offset.shape[0]
    o2 = np.ascontiguousarray(offset, np.float32).reshape(n_c, -1)
    s2 = np.ascontiguousarray(noise, np.float32).reshape(n_c, -1)
    c2 = (np.zeros((1, 1), np.int32) if count is None
          else np.ascontiguousarray(count, np.int32).reshape(n_c, -1))
    out = np.empty(o2.shape, np.uint32)
    _flag_kernel(o2, s2, c2, count is not None, float(offset_sigma), float(noise_sigma),
                 o_lo, o_hi, n_lo, n_hi, out)
    return out.reshape(offset.shape)


@njit(cache=True, parallel=True)
def _threshold_kernel(med, std, sigma, thr, flags):
    n_p = med.shape[1]
    for i in prange(n_p):
        g0, g1, g2 = med[0, i], med[1, i], med[2, i]
        thr[0, i] = 0.5 * (g0 + g1)
        thr[1, i] = 0.5 * (g1 + g2)
        thr[2, i] = g0
        thr[3, i] = g1
        thr[4, i] = g2
        ok = True
        for g in range(3):
            if not (np.isfinite(med[g, i]) and np.isfinite(std[g, i])):
                ok = False
        if ok:
            if g0 + sigma * std[0, i] > g1 - sigma * std[1, i]:
                ok = False
            if g1 + sigma * std[1, i] > g2 - sigma * std[2, i]:
                ok = False
        flags[i] = np.uint32(0) if ok else _GAIN_ERROR


def agipd_thresholds(digital_median: np.ndarray, digital_std: np.ndarray, *,
                     sigma: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """ThresholdsDark from the digital values of the three dark runs (high, medium, low).

    Inputs are ``[3, cells, *pixels]``. Returns ``thresholds float32[5, cells, *pixels]``
    (0: high/medium boundary, 1: medium/low boundary, each the midpoint of the medians;
    2-4: the three digital medians, as the facility stores them) and ``flags
    uint32[cells, *pixels]`` with GAIN_THRESHOLDING_ERROR where the stages overlap within
    ``sigma`` standard deviations, or a value is not finite.
    """
    med = np.asarray(digital_median)
    std = np.asarray(digital_std)
    if med.shape != std.shape or med.ndim < 2 or med.shape[0] != 3:
        raise KernelInputError(
            f"digital median {med.shape} and std {std.shape} must both be [3, cells, *pixels]")
    if not sigma >= 0:
        raise KernelInputError(f"sigma must be >= 0, got {sigma!r}")
    m2 = np.ascontiguousarray(med, np.float32).reshape(3, -1)
    s2 = np.ascontiguousarray(std, np.float32).reshape(3, -1)
    thr = np.empty((5, m2.shape[1]), np.float32)
    flags = np.empty(m2.shape[1], np.uint32)
    _threshold_kernel(m2, s2, np.float32(sigma), thr, flags)
    return thr.reshape(5, *med.shape[1:]), flags.reshape(med.shape[1:])
