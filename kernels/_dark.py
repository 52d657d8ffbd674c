"""Dark statistics per pixel and memory cell: the numpy-shaped entry points.

Shapes: a dark run is ``data[trains, cells, *pixels]`` uint16 (for AGIPD, frames of one
train are its memory cells). Results are ``[cells, *pixels]``. ``agipd_raw_by_train``
turns the facility's raw frames ``(frames, 2, 512, 128)`` plus their cellId into that
layout, without a copy when the frames are in the usual train-major order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._flags import KernelInputError
from ._stats import accumulate_core, finish_moments, stats_core

__all__ = [
    "DarkStats",
    "DarkAccumulator",
    "dark_stats",
    "dark_offset_noise",
    "dark_mean_std",
    "agipd_raw_by_train",
    "agipd_dark_stats",
]

JUNGFRAU_GAIN_BITS = (0b00, 0b01, 0b11)


@dataclass(frozen=True)
class DarkStats:
    """Per-cell, per-pixel statistics of one dark run; get one from ``dark_stats``.

    ``median`` is None when only the streaming statistics were asked for. ``rejected``
    counts samples left out because their gain bits did not match the run's gain.
    """

    median: np.ndarray | None
    mean: np.ndarray
    std: np.ndarray
    count: np.ndarray
    rejected: np.ndarray

    @property
    def offset(self) -> np.ndarray:
        """The facility's offset: the median where computed, else the mean."""
        return self.median if self.median is not None else self.mean

    @property
    def noise(self) -> np.ndarray:
        return self.std


def _as_3d(data: np.ndarray, name: str = "data") -> np.ndarray:
    if not isinstance(data, np.ndarray) or data.dtype != np.uint16:
        raise KernelInputError(f"{name} must be a uint16 numpy array, got "
                               f"{getattr(data, 'dtype', type(data).__name__)}")
    if data.ndim < 3:
        raise KernelInputError(f"{name} must be [trains, cells, *pixels], got shape {data.shape}")
    if 0 in data.shape:
        raise KernelInputError(f"{name} has an empty axis: shape {data.shape}")
    return np.ascontiguousarray(data).reshape(data.shape[0], data.shape[1], -1)


def _gain_bits(gain_stage: int | None) -> int:
    if gain_stage is None:
        return -1
    if gain_stage not in (0, 1, 2):
        raise KernelInputError(f"gain_stage must be 0, 1 or 2, got {gain_stage!r}")
    return JUNGFRAU_GAIN_BITS[gain_stage]


def _run_stats(data3: np.ndarray, q0: int, n_pix: int, pix_shape: tuple[int, ...],
               median: bool, vmask: int, gbits: int) -> DarkStats:
    n_c = data3.shape[1]
    med = np.empty((n_c, n_pix), np.float32)
    mean = np.empty((n_c, n_pix), np.float32)
    std = np.empty((n_c, n_pix), np.float32)
    count = np.empty((n_c, n_pix), np.int32)
    rejected = np.empty((n_c, n_pix), np.int32)
    stats_core(data3, q0, n_pix, vmask, gbits, median, med, mean, std, count, rejected)
    shape = (n_c, *pix_shape)
    return DarkStats(
        median=med.reshape(shape) if median else None,
        mean=mean.reshape(shape),
        std=std.reshape(shape),
        count=count.reshape(shape),
        rejected=rejected.reshape(shape),
    )


def dark_stats(data: np.ndarray, *, median: bool = True, adc_bits: int = 16,
               gain_stage: int | None = None) -> DarkStats:
    """Statistics over trains of ``data[trains, cells, *pixels]`` (uint16).

    ``median=True`` gives the exact ``np.median`` (the facility's offset); ``False`` only
    one streaming pass (mean, std). ``adc_bits=14, gain_stage=g`` is JUNGFRAU: the value
    is the low 14 bits and only samples whose top two bits are gain ``g``'s are used.
    """
    if adc_bits not in (14, 16):
        raise KernelInputError(f"adc_bits must be 14 or 16, got {adc_bits!r}")
    if gain_stage is not None and adc_bits != 14:
        raise KernelInputError("gain_stage needs adc_bits=14 (gain in the top 2 bits)")
    data3 = _as_3d(data)
    return _run_stats(data3, 0, data3.shape[2], tuple(data.shape[2:]), median,
                      (1 << adc_bits) - 1, _gain_bits(gain_stage))


def dark_offset_noise(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(offset, noise) float32[cells, *pixels]: median and std over trains, as the facility."""
    st = dark_stats(data, median=True)
    return st.offset, st.noise


def dark_mean_std(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std) float32[cells, *pixels] in one pass over ``data[trains, cells, *pixels]``."""
    st = dark_stats(data, median=False)
    return st.mean, st.std


def agipd_raw_by_train(raw: np.ndarray, cell_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw AGIPD frames ``(frames, 2, x, y)`` and cellId -> ``(trains, cells, 2, x, y)``, cells.

    Frames in train-major order with one repeating cell sequence give a view; otherwise
    the frames are grouped by cell (a copy), which needs the same count for every cell.
    """
    if raw.ndim != 4 or raw.shape[1] != 2:
        raise KernelInputError(f"raw must be (frames, 2, x, y), got shape {raw.shape}")
    cell_ids = np.asarray(cell_ids).ravel()
    if cell_ids.shape[0] != raw.shape[0]:
        raise KernelInputError(
            f"{cell_ids.shape[0]} cell ids for {raw.shape[0]} frames")
    cells, counts = np.unique(cell_ids, return_counts=True)
    if counts.min() != counts.max():
        raise KernelInputError(
            f"memory cells have unequal frame counts ({counts.min()}..{counts.max()}); "
            "select complete trains first")
    n_c, n_t = cells.size, int(counts[0])
    pattern = cell_ids[:n_c]
    if np.array_equal(cell_ids.reshape(n_t, n_c), np.broadcast_to(pattern, (n_t, n_c))):
        return raw.reshape(n_t, n_c, *raw.shape[1:]), pattern.copy()
    order = np.argsort(cell_ids, kind="stable")
    grouped = raw[order].reshape(n_c, n_t, *raw.shape[1:])
    return np.ascontiguousarray(grouped.swapaxes(0, 1)), cells


def agipd_dark_stats(by_train: np.ndarray, *, median: bool = True) -> tuple[DarkStats, DarkStats]:
    """(analog, digital) statistics of ``by_train[trains, cells, 2, x, y]`` uint16, in place."""
    if by_train.ndim != 5 or by_train.shape[2] != 2:
        raise KernelInputError(
            f"expected (trains, cells, 2, x, y), got shape {by_train.shape}")
    data3 = _as_3d(by_train)
    n_pix = data3.shape[2] // 2
    pix = tuple(by_train.shape[3:])
    analog = _run_stats(data3, 0, n_pix, pix, median, 0xFFFF, -1)
    digital = _run_stats(data3, n_pix, n_pix, pix, median, 0xFFFF, -1)
    return analog, digital


class DarkAccumulator:
    """Mean and std of a dark run fed in chunks of trains (a stream, or file by file).

    ``acc = DarkAccumulator(); acc.update(chunk)`` for each ``chunk[trains, cells, *pixels]``
    uint16, then ``acc.result()``. Sums are exact integers, so the result does not depend
    on how the run was cut into chunks.
    """

    def __init__(self, *, adc_bits: int = 16, gain_stage: int | None = None) -> None:
        if adc_bits not in (14, 16):
            raise KernelInputError(f"adc_bits must be 14 or 16, got {adc_bits!r}")
        self._vmask = (1 << adc_bits) - 1
        self._gbits = _gain_bits(gain_stage)
        self._shape: tuple[int, ...] | None = None
        empty: np.ndarray = np.empty((0, 0), np.int64)
        self._shift, self._cnt, self._s, self._ss, self._rej = (empty,) * 5

    def update(self, chunk: np.ndarray) -> None:
        data3 = _as_3d(chunk, "chunk")
        shape = tuple(chunk.shape[1:])
        if self._shape is None:
            self._shape = shape
            self._shift = (data3[0].astype(np.int32) & self._vmask)
            zeros = np.zeros(data3.shape[1:], np.int64)
            self._cnt, self._s, self._ss, self._rej = (zeros.copy() for _ in range(4))
        elif shape != self._shape:
            raise KernelInputError(
                f"chunk has cells/pixels {shape}, earlier chunks had {self._shape}")
        accumulate_core(data3, 0, data3.shape[2], self._vmask, self._gbits, self._shift,
                        self._cnt, self._s, self._ss, self._rej)

    def result(self) -> DarkStats:
        if self._shape is None:
            raise KernelInputError("no chunk was added to the accumulator")
        mean = np.empty(self._cnt.shape, np.float32)
        std = np.empty(self._cnt.shape, np.float32)
        finish_moments(self._shift, self._cnt, self._s, self._ss, mean, std)
        return DarkStats(
            median=None,
            mean=mean.reshape(self._shape),
            std=std.reshape(self._shape),
            count=self._cnt.astype(np.int32).reshape(self._shape),
            rejected=self._rej.astype(np.int32).reshape(self._shape),
        )
