"""Correction of raw frames: gain selection, offset by gain and cell, relative gain, masking.

Why it is fast: the constants of a cell are packed into one compact table
(``[cells, rows, pixels]`` float32: thresholds, offsets and factors side by side, with bad
pixels folded into a NaN factor), and the frames of a batch are visited grouped by memory
cell. A block of one cell's table is then read from memory once per batch, and stays in
cache while every frame of that cell in the batch is corrected. A frame stream is the
same call with a small batch; it only re-reads the table more often.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit, prange

from ._flags import BadPixels, KernelInputError

__all__ = [
    "AgipdCorrectionConstants",
    "JungfrauCorrectionConstants",
    "pack_agipd_constants",
    "pack_jungfrau_constants",
    "correct_agipd",
    "correct_jungfrau",
]

_BLK = 2048
_WRONG_GAIN = np.uint32(BadPixels.WRONG_GAIN_VALUE)


@dataclass(frozen=True)
class AgipdCorrectionConstants:
    """AGIPD constants packed for ``correct_agipd``; get one from ``pack_agipd_constants``.

    ``table`` rows: 0-1 gain thresholds, 2-4 offsets, 5-6-7 factors (relative gain, NaN
    where the pixel is masked) for high, medium and low gain.
    """

    table: np.ndarray
    bad_pixels: np.ndarray
    pixel_shape: tuple[int, ...]

    @property
    def n_cells(self) -> int:
        return int(self.table.shape[0])


@dataclass(frozen=True)
class JungfrauCorrectionConstants:
    """JUNGFRAU constants packed for ``correct_jungfrau``; get one from the pack function.

    ``table`` rows: 0-2 offsets, 3-5 factors for gain stages 0, 1, 2.
    """

    table: np.ndarray
    bad_pixels: np.ndarray
    pixel_shape: tuple[int, ...]

    @property
    def n_cells(self) -> int:
        return int(self.table.shape[0])


def _per_gain(name: str, arr: np.ndarray | None, shape: tuple[int, ...], dtype, fill):
    if arr is None:
        return np.full(shape, fill, dtype)
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise KernelInputError(f"{name} has shape {arr.shape}, expected {shape}")
    return arr.astype(dtype, copy=False)


def _factors(offset, rel_gain, bad_pixels, mask_bad):
    shape = offset.shape
    gain = _per_gain("rel_gain", rel_gain, shape, np.float32, 1.0)
    bp = _per_gain("bad_pixels", bad_pixels, shape, np.uint32, 0)
    fac = gain.copy()
    if mask_bad:
        fac[bp != 0] = np.nan
    fac[~(np.isfinite(offset) & np.isfinite(fac))] = np.nan
    return fac, bp


def pack_agipd_constants(offset: np.ndarray, thresholds: np.ndarray, *,
                         rel_gain: np.ndarray | None = None,
                         bad_pixels: np.ndarray | None = None,
                         mask_bad: bool = True) -> AgipdCorrectionConstants:
    """Pack ``offset[3, cells, x, y]``, ``thresholds[2 or 5, cells, x, y]`` and optional
    ``rel_gain`` / ``bad_pixels`` (``[3, cells, x, y]``) for ``correct_agipd``.

    The corrected value is ``(adc - offset[g]) * rel_gain[g]``; with ``mask_bad`` a pixel
    with any bad-pixel bit in its gain stage is replaced by the mask value.
    """
    offset = np.asarray(offset, np.float32)
    if offset.ndim < 3 or offset.shape[0] != 3:
        raise KernelInputError(f"offset must be [3, cells, *pixels], got {offset.shape}")
    thresholds = np.asarray(thresholds, np.float32)
    if thresholds.shape[0] < 2 or thresholds.shape[1:] != offset.shape[1:]:
        raise KernelInputError(
            f"thresholds {thresholds.shape} must be [2 or 5, *{offset.shape[1:]}]")
    fac, bp = _factors(offset, rel_gain, bad_pixels, mask_bad)
    n_c = offset.shape[1]
    table = np.empty((n_c, 8, int(np.prod(offset.shape[2:]))), np.float32)
    table[:, 0:2] = thresholds[:2].reshape(2, n_c, -1).swapaxes(0, 1)
    table[:, 2:5] = offset.reshape(3, n_c, -1).swapaxes(0, 1)
    table[:, 5:8] = fac.reshape(3, n_c, -1).swapaxes(0, 1)
    bpt = np.ascontiguousarray(bp.reshape(3, n_c, -1).swapaxes(0, 1))
    return AgipdCorrectionConstants(table, bpt, tuple(offset.shape[2:]))


def pack_jungfrau_constants(offset: np.ndarray, *, rel_gain: np.ndarray | None = None,
                            bad_pixels: np.ndarray | None = None,
                            mask_bad: bool = True) -> JungfrauCorrectionConstants:
    """Pack ``offset[3, cells, x, y]`` and optional ``rel_gain`` / ``bad_pixels`` for
    ``correct_jungfrau``; the corrected value is ``(adc - offset[g]) * rel_gain[g]``."""
    offset = np.asarray(offset, np.float32)
    if offset.ndim < 3 or offset.shape[0] != 3:
        raise KernelInputError(f"offset must be [3, cells, *pixels], got {offset.shape}")
    fac, bp = _factors(offset, rel_gain, bad_pixels, mask_bad)
    n_c = offset.shape[1]
    table = np.empty((n_c, 6, int(np.prod(offset.shape[2:]))), np.float32)
    table[:, 0:3] = offset.reshape(3, n_c, -1).swapaxes(0, 1)
    table[:, 3:6] = fac.reshape(3, n_c, -1).swapaxes(0, 1)
    bpt = np.ascontiguousarray(bp.reshape(3, n_c, -1).swapaxes(0, 1))
    return JungfrauCorrectionConstants(table, bpt, tuple(offset.shape[2:]))


@njit(cache=True)
def _agipd_frame(ra, rd, tab, p0, p1, mask_value, o):
    t0, t1 = tab[0, p0:p1], tab[1, p0:p1]
    o0, o1, o2 = tab[2, p0:p1], tab[3, p0:p1], tab[4, p0:p1]
    f0, f1, f2 = tab[5, p0:p1], tab[6, p0:p1], tab[7, p0:p1]
    for i in range(p1 - p0):
        adc = np.float32(ra[i])
        dig = np.float32(rd[i])
        a0, a1, a2 = o0[i], o1[i], o2[i]
        b0, b1, b2 = f0[i], f1[i], f2[i]
        off, fac = a0, b0
        if dig > t0[i]:
            off, fac = a1, b1
        if dig > t1[i]:
            off, fac = a2, b2
        v = (adc - off) * fac
        if np.isnan(v):
            v = mask_value
        o[i] = v


@njit(cache=True)
def _agipd_gain_mask(rd, tab, bp, p0, p1, want_gain, g_out, want_mask, m_out):
    t0, t1 = tab[0, p0:p1], tab[1, p0:p1]
    for i in range(p1 - p0):
        dig = np.float32(rd[i])
        g = 2 if dig > t1[i] else (1 if dig > t0[i] else 0)
        if want_gain:
            g_out[i] = g
        if want_mask:
            m_out[i] = bp[g, p0 + i]


@njit(cache=True, parallel=True)
def _agipd_kernel(raw, order, starts, cells, table, bpix, mask_value, out,
                  want_gain, gain_out, want_mask, mask_out):
    n_pix = table.shape[2]
    n_b = (n_pix + _BLK - 1) // _BLK
    for task in prange(cells.size * n_b):
        u = task // n_b
        p0 = (task % n_b) * _BLK
        p1 = min(n_pix, p0 + _BLK)
        tab = table[cells[u]]
        for j in range(starts[u], starts[u + 1]):
            f = order[j]
            rd = raw[f, n_pix + p0:n_pix + p1]
            _agipd_frame(raw[f, p0:p1], rd, tab, p0, p1, mask_value, out[f, p0:p1])
            if want_gain or want_mask:
                _agipd_gain_mask(rd, tab, bpix[cells[u]], p0, p1, want_gain,
                                 gain_out[f, p0:p1] if want_gain else gain_out[0, :0],
                                 want_mask,
                                 mask_out[f, p0:p1] if want_mask else mask_out[0, :0])


@njit(cache=True)
def _jungfrau_frame(r, tab, bp, p0, p1, mask_value, o, want_gain, g_out, want_mask, m_out):
    o0, o1, o2 = tab[0, p0:p1], tab[1, p0:p1], tab[2, p0:p1]
    f0, f1, f2 = tab[3, p0:p1], tab[4, p0:p1], tab[5, p0:p1]
    for i in range(p1 - p0):
        raw = np.int32(r[i])
        bits = raw >> 14
        adc = np.float32(raw & 0x3FFF)
        a0, a1, a2 = o0[i], o1[i], o2[i]
        b0, b1, b2 = f0[i], f1[i], f2[i]
        off, fac = a0, b0
        if bits == 1:
            off, fac = a1, b1
        if bits >= 2:
            off, fac = a2, b2
        v = (adc - off) * fac
        if np.isnan(v) or bits == 2:
            v = mask_value
        o[i] = v
    if want_gain or want_mask:
        for i in range(p1 - p0):
            bits = np.int32(r[i]) >> 14
            g = min(bits, 2)
            if want_gain:
                g_out[i] = g
            if want_mask:
                m = bp[g, p0 + i]
                m_out[i] = m | _WRONG_GAIN if bits == 2 else m


@njit(cache=True, parallel=True)
def _jungfrau_kernel(raw, order, starts, cells, table, bpix, mask_value, out,
                     want_gain, gain_out, want_mask, mask_out):
    n_pix = table.shape[2]
    n_b = (n_pix + _BLK - 1) // _BLK
    for task in prange(cells.size * n_b):
        u = task // n_b
        p0 = (task % n_b) * _BLK
        p1 = min(n_pix, p0 + _BLK)
        tab = table[cells[u]]
        for j in range(starts[u], starts[u + 1]):
            f = order[j]
            _jungfrau_frame(raw[f, p0:p1], tab, bpix[cells[u]], p0, p1, mask_value,
                            out[f, p0:p1], want_gain,
                            gain_out[f, p0:p1] if want_gain else gain_out[0, :0],
                            want_mask, mask_out[f, p0:p1] if want_mask else mask_out[0, :0])


def _grouping(cell_ids: np.ndarray, n_frames: int, n_cells: int):
    ids = np.asarray(cell_ids).ravel()
    if ids.shape[0] != n_frames:
        raise KernelInputError(f"{ids.shape[0]} cell ids for {n_frames} frames")
    if ids.size and (ids.min() < 0 or ids.max() >= n_cells):
        raise KernelInputError(
            f"cell ids span {ids.min()}..{ids.max()}, constants have {n_cells} cells")
    order = np.argsort(ids, kind="stable").astype(np.int64)
    cells, starts = np.unique(ids[order], return_index=True)
    return order, np.append(starts, n_frames).astype(np.int64), cells.astype(np.int64)


def _outputs(n_frames, pix_shape, out, gain_out, mask_out):
    shape = (n_frames, *pix_shape)
    if out is None:
        out = np.empty(shape, np.float32)
    for name, arr, dtype in (("out", out, np.float32), ("gain_out", gain_out, np.uint8),
                             ("mask_out", mask_out, np.uint32)):
        if arr is not None and (arr.shape != shape or arr.dtype != dtype
                                or not arr.flags.c_contiguous):
            raise KernelInputError(f"{name} must be C-contiguous {np.dtype(dtype)}{shape}")
    return out, shape


def _run(kernel, raw2, cell_ids, consts, mask_value, out, gain_out, mask_out):
    n_f = raw2.shape[0]
    out, shape = _outputs(n_f, consts.pixel_shape, out, gain_out, mask_out)
    order, starts, cells = _grouping(cell_ids, n_f, consts.n_cells)
    n_pix = consts.table.shape[2]
    g = np.empty((1, 1), np.uint8) if gain_out is None else gain_out.reshape(n_f, n_pix)
    m = np.empty((1, 1), np.uint32) if mask_out is None else mask_out.reshape(n_f, n_pix)
    kernel(raw2, order, starts, cells, consts.table, consts.bad_pixels,
           np.float32(mask_value), out.reshape(n_f, n_pix), gain_out is not None, g,
           mask_out is not None, m)
    return out


def correct_agipd(raw: np.ndarray, cell_ids: np.ndarray, consts: AgipdCorrectionConstants, *,
                  mask_value: float = np.nan, out: np.ndarray | None = None,
                  gain_out: np.ndarray | None = None,
                  mask_out: np.ndarray | None = None) -> np.ndarray:
    """Correct raw AGIPD frames ``uint16[frames, 2, x, y]`` (analog, digital) -> float32.

    ``cell_ids[frames]`` index the constants' cells. Gain stage g is 0, then 1 where the
    digital value is above threshold 0, then 2 where above threshold 1 (the facility's
    rule). Masked pixels get ``mask_value``; ``gain_out`` (uint8) and ``mask_out``
    (uint32 bad-pixel bits of the selected gain) are filled when given.
    """
    if raw.dtype != np.uint16 or raw.ndim < 3 or raw.shape[1] != 2:
        raise KernelInputError(f"raw must be uint16 [frames, 2, *pixels], got {raw.dtype}"
                               f"{raw.shape}")
    if tuple(raw.shape[2:]) != consts.pixel_shape:
        raise KernelInputError(
            f"raw pixels {raw.shape[2:]} do not match constants {consts.pixel_shape}")
    raw2 = np.ascontiguousarray(raw).reshape(raw.shape[0], -1)
    return _run(_agipd_kernel, raw2, cell_ids, consts, mask_value, out, gain_out, mask_out)


def correct_jungfrau(raw: np.ndarray, cell_ids: np.ndarray,
                     consts: JungfrauCorrectionConstants, *, mask_value: float = np.nan,
                     out: np.ndarray | None = None, gain_out: np.ndarray | None = None,
                     mask_out: np.ndarray | None = None) -> np.ndarray:
    """Correct raw JUNGFRAU frames ``uint16[frames, x, y]`` -> float32.

    The gain is in the top two bits (0b00 high, 0b01 medium, 0b11 low); 0b10 is not a
    gain, so the pixel gets ``mask_value`` and WRONG_GAIN_VALUE in ``mask_out``.
    """
    if raw.dtype != np.uint16 or raw.ndim < 2:
        raise KernelInputError(f"raw must be uint16 [frames, *pixels], got {raw.dtype}"
                               f"{raw.shape}")
    if tuple(raw.shape[1:]) != consts.pixel_shape:
        raise KernelInputError(
            f"raw pixels {raw.shape[1:]} do not match constants {consts.pixel_shape}")
    raw2 = np.ascontiguousarray(raw).reshape(raw.shape[0], -1)
    return _run(_jungfrau_kernel, raw2, cell_ids, consts, mask_value, out, gain_out, mask_out)
