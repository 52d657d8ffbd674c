"""Common-mode correction for ePix100 and pnCCD, and their dark characterization.

These sensors read a row (or column) of one ASIC through shared electronics, so a whole
row moves together from frame to frame. The facility removes that by subtracting the
median of each row (or column) of each ASIC or block, taken over the pixels that carry no
signal: masked pixels, non-finite values and values beyond ``max_abs`` are left out, and
a row with fewer than ``min_valid`` usable pixels is left as it is.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._dark import dark_stats
from ._flags import KernelInputError

__all__ = ["common_mode", "ccd_dark"]


@njit(cache=True, parallel=True)
def _cm_kernel(frames, bx, by, by_col, mask, max_abs, min_valid):
    n_f, n_x, n_y = frames.shape
    nbx = n_x // bx
    nby = n_y // by
    n_lines = by if by_col else bx
    for task in prange(n_f * nbx * nby):
        f = task // (nbx * nby)
        b = task % (nbx * nby)
        x0 = (b // nby) * bx
        y0 = (b % nby) * by
        buf = np.empty(max(bx, by), np.float32)
        for line in range(n_lines):
            k = 0
            n_along = bx if by_col else by
            for j in range(n_along):
                x = x0 + j if by_col else x0 + line
                y = y0 + line if by_col else y0 + j
                v = frames[f, x, y]
                if mask[x, y] == 0 and np.isfinite(v) and abs(v) <= max_abs:
                    buf[k] = v
                    k += 1
            if k < min_valid or k == 0:
                continue
            cm = np.float32(np.median(buf[:k]))
            for j in range(n_along):
                x = x0 + j if by_col else x0 + line
                y = y0 + line if by_col else y0 + j
                frames[f, x, y] -= cm


def common_mode(frames: np.ndarray, *, block_shape: tuple[int, int], axis: str = "row",
                mask: np.ndarray | None = None, max_abs: float = math.inf,
                min_valid: int = 1) -> np.ndarray:
    """Subtract row (``axis="row"``) or column medians per block, in place; returns ``frames``.

    ``frames`` is float32 ``[frames, x, y]`` (or one ``[x, y]`` frame), already offset
    corrected; ``block_shape`` (bx, by) tiles ``(x, y)`` exactly, one block per ASIC;
    a "row" is the pixels of one x inside a block, a "column" those of one y.
    ``mask`` (``[x, y]``, non-zero = bad) pixels are left out of the median but corrected.
    """
    if not isinstance(frames, np.ndarray) or frames.dtype != np.float32:
        raise KernelInputError("frames must be a float32 numpy array")
    arr = frames[np.newaxis] if frames.ndim == 2 else frames
    if arr.ndim != 3 or not arr.flags.c_contiguous:
        raise KernelInputError(
            f"frames must be C-contiguous [frames, x, y] or [x, y], got shape {frames.shape}")
    bx, by = (int(v) for v in block_shape)
    n_x, n_y = arr.shape[1:]
    if bx <= 0 or by <= 0 or n_x % bx or n_y % by:
        raise KernelInputError(f"block_shape {block_shape} does not tile ({n_x}, {n_y})")
    if axis not in ("row", "col"):
        raise KernelInputError(f"axis must be 'row' or 'col', got {axis!r}")
    if min_valid < 1:
        raise KernelInputError(f"min_valid must be >= 1, got {min_valid}")
    if mask is None:
        m = np.zeros((n_x, n_y), np.uint32)
    else:
        if np.shape(mask) != (n_x, n_y):
            raise KernelInputError(f"mask {np.shape(mask)} must have shape {(n_x, n_y)}")
        m = np.ascontiguousarray(mask).astype(np.uint32, copy=False)
    _cm_kernel(arr, bx, by, axis == "col", m, float(max_abs), int(min_valid))
    return frames


def ccd_dark(data: np.ndarray, *, block_shape: tuple[int, int], axis: str = "row",
             max_abs: float = math.inf, min_valid: int = 1,
             chunk: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """ePix100 / pnCCD dark: ``data[frames, x, y]`` uint16 -> (offset, noise, noise_cm, count).

    ``offset`` is the median over frames, ``noise`` the plain std and ``noise_cm`` the std
    after common-mode correction of each offset-subtracted frame; all ``float32[x, y]``.
    """
    if not isinstance(data, np.ndarray) or data.dtype != np.uint16 or data.ndim != 3:
        raise KernelInputError("data must be uint16 [frames, x, y]")
    st = dark_stats(data[:, np.newaxis], median=True)
    offset = st.offset[0]
    s = np.zeros(offset.shape, np.float64)
    ss = np.zeros(offset.shape, np.float64)
    for f0 in range(0, data.shape[0], chunk):
        block = data[f0:f0 + chunk].astype(np.float32) - offset
        common_mode(block, block_shape=block_shape, axis=axis, max_abs=max_abs,
                    min_valid=min_valid)
        s += block.sum(axis=0, dtype=np.float64)
        ss += np.square(block, dtype=np.float64).sum(axis=0)
    n = data.shape[0]
    noise_cm = np.sqrt(np.maximum(ss / n - (s / n) ** 2, 0.0)).astype(np.float32)
    return offset, st.noise[0], noise_cm, st.count[0]
