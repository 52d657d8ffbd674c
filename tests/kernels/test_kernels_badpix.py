"""BadPixelsDark, ThresholdsDark and whole characterizations against plain numpy."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kernels import (
    JUNGFRAU_SETTINGS,
    BadPixels,
    KernelInputError,
    agipd_thresholds,
    bad_pixels_dark,
    characterize_agipd_dark,
    characterize_jungfrau_dark,
)

BP = BadPixels


def test_bit_values_are_the_facility_ones():
    assert BP.OFFSET_OUT_OF_THRESHOLD == 1
    assert BP.NO_DARK_DATA == 8
    assert BP.GAIN_THRESHOLDING_ERROR == 1 << 13
    assert BP.DATA_STD_IS_ZERO == 1 << 14
    assert BP.WRONG_GAIN_VALUE == 1 << 21
    assert BP.NON_STANDARD_SIZE == 1 << 22
    assert [int(b).bit_length() - 1 for b in BP] == list(range(23))


def flags_reference(offset, noise, count, o_sigma, n_sigma, o_range, n_range):
    off = offset.astype(np.float64)
    noi = noise.astype(np.float64)
    axes = tuple(range(1, off.ndim))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        o_med = np.nanmedian(np.where(np.isfinite(off), off, np.nan), axis=axes, keepdims=True)
        o_std = np.nanstd(np.where(np.isfinite(off), off, np.nan), axis=axes, keepdims=True)
        n_med = np.nanmedian(np.where(np.isfinite(noi), noi, np.nan), axis=axes, keepdims=True)
        n_std = np.nanstd(np.where(np.isfinite(noi), noi, np.nan), axis=axes, keepdims=True)
    out = np.zeros(off.shape, np.uint32)
    with np.errstate(invalid="ignore"):
        out[~(np.isfinite(off) & np.isfinite(noi))] |= np.uint32(BP.OFFSET_NOISE_EVAL_ERROR)
        o_bad = (np.abs(off - o_med) > o_sigma * o_std) | (off < o_range[0]) | (off > o_range[1])
        n_bad = (np.abs(noi - n_med) > n_sigma * n_std) | (noi < n_range[0]) | (noi > n_range[1])
    out[o_bad] |= np.uint32(BP.OFFSET_OUT_OF_THRESHOLD)
    out[n_bad] |= np.uint32(BP.NOISE_OUT_OF_THRESHOLD)
    out[noi == 0] |= np.uint32(BP.DATA_STD_IS_ZERO)
    out[count == 0] |= np.uint32(BP.NO_DARK_DATA)
    return out


@pytest.mark.parametrize(
    ("shape", "o_range", "n_range"),
    [
        pytest.param((1, 3, 5), (-np.inf, np.inf), (-np.inf, np.inf), id="1-cell-3x5-no-hard"),
        pytest.param((4, 16, 8), (4950, 5060), (3.0, 14.0), id="hard-ranges"),
    ],
)
def test_bad_pixel_flags_match_numpy(shape, o_range, n_range):
    rng = np.random.default_rng(sum(shape))
    offset = rng.normal(5000, 20, shape).astype(np.float32)
    noise = rng.normal(10, 2, shape).astype(np.float32)
    count = np.full(shape, 100, np.int32)
    offset.flat[0] = np.nan
    noise.flat[1] = np.inf
    noise.flat[2] = 0.0
    offset.flat[3] = 9000.0
    count.flat[4] = 0
    kw = {}
    if np.isfinite(o_range[0]):
        kw = {"offset_range": o_range, "noise_range": n_range}
    got = bad_pixels_dark(offset, noise, count=count, offset_sigma=3.0, noise_sigma=2.5, **kw)
    ref = flags_reference(offset, noise, count, 3.0, 2.5, o_range, n_range)
    np.testing.assert_array_equal(got, ref)
    assert got.flat[0] & BP.OFFSET_NOISE_EVAL_ERROR and got.flat[2] & BP.DATA_STD_IS_ZERO
    assert got.flat[4] & BP.NO_DARK_DATA


def test_a_cell_with_no_finite_value_flags_every_pixel_as_eval_error():
    offset = np.full((2, 3, 5), np.nan, np.float32)
    offset[1] = 5000
    noise = np.full((2, 3, 5), 10, np.float32)
    got = bad_pixels_dark(offset, noise)
    assert (got[0] == BP.OFFSET_NOISE_EVAL_ERROR).all()
    assert (got[1] == 0).all()


def test_bad_pixel_input_errors():
    with pytest.raises(KernelInputError, match="same"):
        bad_pixels_dark(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(KernelInputError, match="low <= high"):
        bad_pixels_dark(np.zeros((2, 3)), np.zeros((2, 3)), offset_range=(5, 1))
    with pytest.raises(KernelInputError, match="positive"):
        bad_pixels_dark(np.zeros((2, 3)), np.zeros((2, 3)), noise_sigma=0)


def test_thresholds_match_numpy():
    rng = np.random.default_rng(8)
    shape = (3, 2, 3, 5)
    med = np.stack([rng.normal(m, 30, shape[1:]) for m in (4500, 6500, 8000)])
    med = med.astype(np.float32)
    std = rng.uniform(5, 60, shape).astype(np.float32)
    med[1, 0, 0, 0] = np.nan
    std[2, 1, 2, 4] = 500.0
    thr, flags = agipd_thresholds(med, std, sigma=5.0)
    np.testing.assert_allclose(thr[0], (med[0] + med[1]) / 2, rtol=1e-7)
    np.testing.assert_allclose(thr[1], (med[1] + med[2]) / 2, rtol=1e-7)
    np.testing.assert_array_equal(thr[2:], med)
    s = np.float32(5.0)
    with np.errstate(invalid="ignore"):
        overlap = (med[0] + s * std[0] > med[1] - s * std[1]) | (
            med[1] + s * std[1] > med[2] - s * std[2])
    ref = np.where(overlap | ~np.isfinite(med).all(axis=0), BP.GAIN_THRESHOLDING_ERROR, 0)
    np.testing.assert_array_equal(flags, ref.astype(np.uint32))
    assert flags[0, 0, 0] and flags[1, 2, 4]


def agipd_run(rng, trains, cells, pix, analog, digital):
    data = np.empty((trains, cells, 2, *pix), np.uint16)
    data[:, :, 0] = np.rint(rng.normal(analog, 10, (trains, cells, *pix)))
    data[:, :, 1] = np.rint(rng.normal(digital, 20, (trains, cells, *pix)))
    return data


def test_agipd_characterization_of_three_runs():
    rng = np.random.default_rng(9)
    pix = (6, 4)
    runs = [agipd_run(rng, 20, 3, pix, a, d)
            for a, d in ((5000, 4500), (7000, 6500), (7500, 8200))]
    runs[1][:, 2, 1, 0, 0] = runs[0][:, 2, 1, 0, 0]  # medium gain looks like high
    runs[0][:, 1, 0, 2, 3] = 5000  # a frozen pixel
    consts = characterize_agipd_dark(runs, np.array([0, 1, 2]))
    assert consts.offset.shape == (3, 3, *pix) and consts.thresholds is not None
    assert consts.thresholds.shape == (5, 3, *pix)
    for g, run in enumerate(runs):
        np.testing.assert_array_equal(consts.offset[g], np.median(run[:, :, 0], axis=0))
        np.testing.assert_allclose(consts.noise[g], np.std(run[:, :, 0], axis=0), rtol=2e-6)
    assert (consts.bad_pixels[:, 2, 0, 0] & BP.GAIN_THRESHOLDING_ERROR).all()
    assert not (consts.bad_pixels[:, :2] & BP.GAIN_THRESHOLDING_ERROR).any()
    assert consts.bad_pixels[0, 1, 2, 3] & BP.DATA_STD_IS_ZERO
    digital_median = np.median(runs[0][:, :, 1], axis=0)
    np.testing.assert_array_equal(consts.thresholds[2], digital_median)


def test_agipd_characterization_refuses_two_runs():
    with pytest.raises(KernelInputError, match="3 runs"):
        characterize_agipd_dark([np.zeros((2, 1, 2, 3, 5), np.uint16)] * 2)


def test_jungfrau_characterization_flags_wrong_gain():
    rng = np.random.default_rng(11)
    runs = []
    for g, bits in enumerate((0b00, 0b01, 0b11)):
        adc = np.rint(rng.normal(3000 + 1000 * g, 15, (12, 1, 4, 8))).astype(np.uint16)
        runs.append((adc | np.uint16(bits << 14)).astype(np.uint16))
    runs[1][3, 0, 2, 5] = (runs[1][3, 0, 2, 5] & 0x3FFF) | 0xC000  # one G2 sample in G1
    consts = characterize_jungfrau_dark(runs, settings=JUNGFRAU_SETTINGS)
    assert consts.thresholds is None
    assert consts.bad_pixels[1, 0, 2, 5] & BP.WRONG_GAIN_VALUE
    assert not (consts.bad_pixels[0] & BP.WRONG_GAIN_VALUE).any()
    keep = np.delete(runs[1][:, 0, 2, 5] & 0x3FFF, 3)
    assert consts.offset[1, 0, 2, 5] == np.median(keep)

