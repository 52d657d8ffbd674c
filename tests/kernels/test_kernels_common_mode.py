"""ePix100 / pnCCD common mode and CCD darks against plain numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kernels import KernelInputError, ccd_dark, common_mode


def common_mode_reference(frames, block, axis, mask, max_abs, min_valid):
    out = frames.astype(np.float32).copy()
    bx, by = block
    for f in range(frames.shape[0]):
        for x0 in range(0, frames.shape[1], bx):
            for y0 in range(0, frames.shape[2], by):
                blk = out[f, x0:x0 + bx, y0:y0 + by]
                bad = mask[x0:x0 + bx, y0:y0 + by] != 0
                use = np.where(bad | ~np.isfinite(blk) | (np.abs(blk) > max_abs), np.nan, blk)
                line_axis = 1 if axis == "row" else 0
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    med = np.nanmedian(use.astype(np.float64), axis=line_axis, keepdims=True)
                n = np.isfinite(use).sum(axis=line_axis, keepdims=True)
                med = np.where(n >= min_valid, med, 0.0).astype(np.float32)
                blk -= med
    return out


@pytest.mark.parametrize(
    ("shape", "block", "axis", "max_abs", "min_valid"),
    [
        pytest.param((1, 3, 5), (3, 5), "row", np.inf, 1, id="one-frame-3x5"),
        pytest.param((3, 8, 12), (4, 6), "row", 40.0, 3, id="epix-like-rows"),
        pytest.param((2, 8, 12), (8, 4), "col", 40.0, 2, id="pnccd-like-columns"),
        pytest.param((2, 6, 6), (3, 3), "row", np.inf, 4, id="too-few-valid"),
    ],
)
def test_common_mode_matches_numpy(shape, block, axis, max_abs, min_valid):
    rng = np.random.default_rng(sum(shape))
    frames = rng.normal(0, 5, shape).astype(np.float32)
    frames += rng.normal(0, 20, (shape[0], shape[1], 1)).astype(np.float32)  # row offsets
    frames.flat[rng.integers(frames.size, size=4)] = np.nan
    frames.flat[rng.integers(frames.size, size=3)] = 500.0  # signal, left out of the median
    mask = (rng.random(shape[1:]) < 0.15).astype(np.uint32)
    nan_before = np.isnan(frames)
    ref = common_mode_reference(frames, block, axis, mask, max_abs, min_valid)
    got = common_mode(frames, block_shape=block, axis=axis, mask=mask, max_abs=max_abs,
                      min_valid=min_valid)
    assert got is frames
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(np.isnan(got), nan_before)


def test_common_mode_removes_a_row_offset():
    frame = np.zeros((4, 6), np.float32) + np.arange(4, dtype=np.float32)[:, np.newaxis]
    common_mode(frame, block_shape=(2, 3), axis="row")
    assert not frame.any()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        pytest.param({"block_shape": (3, 4)}, "does not tile", id="block-not-tiling"),
        pytest.param({"block_shape": (2, 3), "axis": "diag"}, "axis", id="bad-axis"),
        pytest.param({"block_shape": (2, 3), "min_valid": 0}, "min_valid", id="min-valid"),
        pytest.param({"block_shape": (2, 3), "mask": np.zeros((2, 2))}, "mask", id="mask"),
    ],
)
def test_common_mode_bad_input(kwargs, message):
    with pytest.raises(KernelInputError, match=message):
        common_mode(np.zeros((1, 4, 6), np.float32), **kwargs)


def test_common_mode_needs_float32():
    with pytest.raises(KernelInputError, match="float32"):
        common_mode(np.zeros((1, 4, 6)), block_shape=(2, 3))


def test_ccd_dark_noise_drops_with_common_mode():
    rng = np.random.default_rng(40)
    frames, nx, ny = 40, 8, 16
    data = rng.normal(1000, 3, (frames, nx, ny)) + rng.normal(0, 15, (frames, nx, 1))
    data = np.rint(data).astype(np.uint16)
    offset, noise, noise_cm, count = ccd_dark(data, block_shape=(4, 8), axis="row", chunk=7)
    np.testing.assert_array_equal(offset, np.median(data, axis=0))
    np.testing.assert_allclose(noise, data.std(axis=0), rtol=2e-6)
    corrected = data.astype(np.float32) - offset
    ref = common_mode_reference(corrected, (4, 8), "row", np.zeros((nx, ny)), np.inf, 1)
    np.testing.assert_allclose(noise_cm, ref.std(axis=0), rtol=1e-4)
    assert noise_cm.mean() < noise.mean() / 2
    assert (count == frames).all()
