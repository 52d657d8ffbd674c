"""Correction of AGIPD and JUNGFRAU frames against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import (
    BadPixels,
    KernelInputError,
    correct_agipd,
    correct_jungfrau,
    pack_agipd_constants,
    pack_jungfrau_constants,
)


def agipd_constants(rng, cells, pix):
    offset = np.stack([rng.normal(m, 20, (cells, *pix)) for m in (5000, 7000, 7500)])
    thresholds = np.stack([rng.normal(m, 30, (cells, *pix)) for m in (5500, 7300)])
    rel_gain = np.stack([rng.normal(m, 0.05, (cells, *pix)) for m in (1.0, 25.0, 100.0)])
    bad = np.where(rng.random((3, cells, *pix)) < 0.05, np.uint32(BadPixels.NOISY_ADC), 0)
    offset.flat[rng.integers(offset.size)] = np.nan
    rel_gain.flat[rng.integers(rel_gain.size)] = np.inf
    return (offset.astype(np.float32), thresholds.astype(np.float32),
            rel_gain.astype(np.float32), bad.astype(np.uint32))


def agipd_frames(rng, cell_ids, pix):
    raw = np.empty((len(cell_ids), 2, *pix), np.uint16)
    raw[:, 0] = rng.integers(4000, 9000, (len(cell_ids), *pix))
    raw[:, 1] = rng.integers(4800, 8000, (len(cell_ids), *pix))
    return raw


def agipd_reference(raw, cell_ids, offset, thresholds, rel_gain, bad, mask_value, mask_bad):
    adc = raw[:, 0].astype(np.float32)
    dig = raw[:, 1].astype(np.float32)
    gain = np.zeros(adc.shape, np.uint8)
    gain[dig > thresholds[0][cell_ids]] = 1
    gain[dig > thresholds[1][cell_ids]] = 2

    def pick(const):
        return np.take_along_axis(const[:, cell_ids], gain[np.newaxis].astype(np.intp), 0)[0]

    off, fac, bp = pick(offset), pick(rel_gain), pick(bad)
    with np.errstate(invalid="ignore"):
        corr = (adc - off) * fac
    masked = ~np.isfinite(off) | ~np.isfinite(fac)
    if mask_bad:
        masked |= bp != 0
    corr[masked] = mask_value
    return corr, gain, bp


@pytest.mark.parametrize(
    ("cell_ids", "pix", "mask_value", "mask_bad"),
    [
        pytest.param([0], (3, 5), np.nan, True, id="one-frame-stream-3x5"),
        pytest.param([2, 0, 1, 2, 0, 1], (16, 8), np.nan, True, id="two-trains"),
        pytest.param([3, 3, 1, 0, 3, 1, 2], (7, 300), -1.0, True, id="shuffled-mask-value"),
        pytest.param([1, 0, 1, 0], (4, 4), 0.0, False, id="no-bad-pixel-masking"),
    ],
)
def test_agipd_correction_matches_numpy(cell_ids, pix, mask_value, mask_bad):
    rng = np.random.default_rng(len(cell_ids) * 7 + pix[1])
    cell_ids = np.array(cell_ids)
    consts = agipd_constants(rng, 4, pix)
    raw = agipd_frames(rng, cell_ids, pix)
    packed = pack_agipd_constants(consts[0], consts[1], rel_gain=consts[2],
                                  bad_pixels=consts[3], mask_bad=mask_bad)
    gain = np.empty((len(cell_ids), *pix), np.uint8)
    mask = np.empty((len(cell_ids), *pix), np.uint32)
    got = correct_agipd(raw, cell_ids, packed, mask_value=mask_value, gain_out=gain,
                        mask_out=mask)
    ref, ref_gain, ref_mask = agipd_reference(raw, cell_ids, *consts, mask_value, mask_bad)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(gain, ref_gain)
    np.testing.assert_array_equal(mask, ref_mask)
    assert set(np.unique(gain)) <= {0, 1, 2}


def test_agipd_batch_and_stream_give_the_same_frames():
    rng = np.random.default_rng(21)
    pix = (8, 8)
    cell_ids = np.tile(np.arange(3), 5)
    consts = agipd_constants(rng, 3, pix)
    packed = pack_agipd_constants(consts[0], consts[1], rel_gain=consts[2],
                                  bad_pixels=consts[3])
    raw = agipd_frames(rng, cell_ids, pix)
    batch = correct_agipd(raw, cell_ids, packed)
    stream = np.concatenate([correct_agipd(raw[i:i + 2], cell_ids[i:i + 2], packed)
                             for i in range(0, len(cell_ids), 2)])
    np.testing.assert_array_equal(batch, stream)


def test_agipd_without_gain_or_bad_pixels_is_offset_only():
    rng = np.random.default_rng(22)
    offset = rng.normal(5000, 10, (3, 2, 3, 5)).astype(np.float32)
    thresholds = np.full((5, 2, 3, 5), 60000, np.float32)
    packed = pack_agipd_constants(offset, thresholds)
    raw = agipd_frames(rng, [1, 0], (3, 5))
    got = correct_agipd(raw, np.array([1, 0]), packed)
    np.testing.assert_array_equal(got, raw[:, 0].astype(np.float32) - offset[0][[1, 0]])


@pytest.mark.parametrize(
    ("cell_ids", "message"),
    [
        pytest.param([0, 4], "cell ids span", id="cell-beyond-constants"),
        pytest.param([0], "2 frames", id="too-few-ids"),
    ],
)
def test_agipd_bad_cell_ids_are_refused(cell_ids, message):
    rng = np.random.default_rng(23)
    consts = agipd_constants(rng, 4, (3, 5))
    packed = pack_agipd_constants(consts[0], consts[1])
    with pytest.raises(KernelInputError, match=message):
        correct_agipd(agipd_frames(rng, [0, 1], (3, 5)), np.array(cell_ids), packed)


def test_agipd_wrong_shapes_are_refused():
    rng = np.random.default_rng(24)
    consts = agipd_constants(rng, 2, (3, 5))
    packed = pack_agipd_constants(consts[0], consts[1])
    with pytest.raises(KernelInputError, match="do not match"):
        correct_agipd(agipd_frames(rng, [0], (3, 6)), np.array([0]), packed)
    with pytest.raises(KernelInputError, match="out must be"):
        correct_agipd(agipd_frames(rng, [0], (3, 5)), np.array([0]), packed,
                      out=np.empty((1, 3, 5), np.float64))
    with pytest.raises(KernelInputError, match="thresholds"):
        pack_agipd_constants(consts[0], consts[1][:1])


def jungfrau_reference(raw, cell_ids, offset, rel_gain, bad, mask_value):
    bits = (raw >> 14).astype(np.intp)
    gain = np.minimum(bits, 2)
    adc = (raw & 0x3FFF).astype(np.float32)
    off = np.take_along_axis(offset[:, cell_ids], gain[np.newaxis], 0)[0]
    fac = np.take_along_axis(rel_gain[:, cell_ids], gain[np.newaxis], 0)[0]
    bp = np.take_along_axis(bad[:, cell_ids], gain[np.newaxis], 0)[0]
    with np.errstate(invalid="ignore"):
        corr = (adc - off) * fac
    masked = (bits == 2) | (bp != 0) | ~np.isfinite(off) | ~np.isfinite(fac)
    corr[masked] = mask_value
    bp = np.where(bits == 2, bp | np.uint32(BadPixels.WRONG_GAIN_VALUE), bp)
    return corr, gain.astype(np.uint8), bp


@pytest.mark.parametrize("cells", [1, 3])
def test_jungfrau_correction_matches_numpy(cells):
    rng = np.random.default_rng(30 + cells)
    pix = (5, 7)
    offset = rng.normal(3000, 50, (3, cells, *pix)).astype(np.float32)
    offset[2, 0, 1, 1] = np.nan
    rel_gain = rng.normal(1, 0.1, (3, cells, *pix)).astype(np.float32)
    bad = np.where(rng.random((3, cells, *pix)) < 0.1, np.uint32(1), np.uint32(0))
    cell_ids = rng.integers(0, cells, 9)
    raw = (rng.integers(0, 4, (9, *pix)).astype(np.uint16) << 14) | rng.integers(
        2000, 4000, (9, *pix)).astype(np.uint16)
    packed = pack_jungfrau_constants(offset, rel_gain=rel_gain, bad_pixels=bad)
    gain = np.empty((9, *pix), np.uint8)
    mask = np.empty((9, *pix), np.uint32)
    got = correct_jungfrau(raw, cell_ids, packed, mask_value=-5.0, gain_out=gain,
                           mask_out=mask)
    ref, ref_gain, ref_mask = jungfrau_reference(raw, cell_ids, offset, rel_gain, bad, -5.0)
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(gain, ref_gain)
    np.testing.assert_array_equal(mask, ref_mask)
    assert (mask & BadPixels.WRONG_GAIN_VALUE).any()
