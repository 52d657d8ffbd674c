"""Dark statistics against plain numpy, on random data with edge shapes and values."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from kernels import (
    DarkAccumulator,
    KernelInputError,
    agipd_dark_stats,
    agipd_raw_by_train,
    dark_mean_std,
    dark_offset_noise,
    dark_stats,
)


def dark_like(rng, trains, cells, pix, *, center=5000, sigma=12.0):
    data = rng.normal(center, sigma, size=(trains, cells, *pix))
    return np.clip(np.rint(data), 0, 65535).astype(np.uint16)


def with_edge_pixels(data, rng):
    """Constant, full-range, bimodal and extreme pixels, where shortcuts would break."""
    flat = data.reshape(data.shape[0], data.shape[1], -1)
    n = flat.shape[2]
    flat[:, :, 0] = 4242
    if n > 1:
        flat[:, :, 1] = rng.integers(0, 65536, size=flat.shape[:2])
    if n > 2:
        flat[:, :, 2] = np.where(rng.random(flat.shape[:2]) < 0.5, 100, 60000)
    if n > 3:
        flat[:, :, 3] = 65535
    if n > 4:
        flat[:, :, 4] = 0
    return data


SHAPES = [
    pytest.param(1, 1, (3, 5), id="1-train-1-cell-3x5"),
    pytest.param(2, 1, (3, 5), id="2-trains"),
    pytest.param(7, 3, (4, 9), id="odd-trains"),
    pytest.param(8, 2, (17, 33), id="even-trains-odd-pixels"),
    pytest.param(64, 4, (2, 600), id="more-pixels-than-a-block"),
]


@pytest.mark.parametrize(("trains", "cells", "pix"), SHAPES)
def test_median_and_std_match_numpy(trains, cells, pix):
    rng = np.random.default_rng(trains * 100 + cells)
    data = with_edge_pixels(dark_like(rng, trains, cells, pix), rng)
    st = dark_stats(data)
    assert st.median is not None
    np.testing.assert_array_equal(st.median, np.median(data, axis=0).astype(np.float32))
    np.testing.assert_allclose(st.mean, np.mean(data, axis=0), rtol=1e-6)
    np.testing.assert_allclose(st.std, np.std(data, axis=0), rtol=2e-6, atol=1e-6)
    assert st.std.reshape(cells, -1)[:, 0].tolist() == [0.0] * cells
    assert (st.count == trains).all() and (st.rejected == 0).all()
    assert st.median.dtype == np.float32 and st.median.shape == (cells, *pix)


def test_wide_noisy_pixels_still_give_the_exact_median():
    rng = np.random.default_rng(7)
    data = rng.integers(0, 65536, size=(101, 2, 40)).astype(np.uint16)
    offset, noise = dark_offset_noise(data)
    np.testing.assert_array_equal(offset, np.median(data, axis=0).astype(np.float32))
    np.testing.assert_allclose(noise, np.std(data, axis=0), rtol=2e-6)


def test_streaming_pass_gives_mean_and_std():
    rng = np.random.default_rng(3)
    data = with_edge_pixels(dark_like(rng, 33, 3, (5, 7)), rng)
    mean, std = dark_mean_std(data)
    np.testing.assert_allclose(mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, data.std(axis=0), rtol=2e-6, atol=1e-6)
    assert dark_stats(data, median=False).median is None


def test_accumulator_does_not_depend_on_chunking():
    rng = np.random.default_rng(4)
    data = with_edge_pixels(dark_like(rng, 50, 2, (3, 5), sigma=300.0), rng)
    acc = DarkAccumulator()
    for lo, hi in [(0, 1), (1, 17), (17, 50)]:
        acc.update(data[lo:hi])
    res = acc.result()
    np.testing.assert_allclose(res.mean, data.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(res.std, data.std(axis=0), rtol=2e-6, atol=1e-6)
    assert (res.count == 50).all()


def test_accumulator_rejects_a_chunk_of_another_shape_and_empty_result():
    acc = DarkAccumulator()
    with pytest.raises(KernelInputError, match="no chunk"):
        acc.result()
    acc.update(np.zeros((2, 1, 3, 5), np.uint16))
    with pytest.raises(KernelInputError, match="earlier chunks"):
        acc.update(np.zeros((2, 1, 3, 6), np.uint16))


def jungfrau_reference(data, gain_stage):
    bits = data >> 14
    adc = (data & 0x3FFF).astype(np.float64)
    good = bits == (0, 1, 3)[gain_stage]
    vals = np.where(good, adc, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels give NaN, as wanted
        med = np.nanmedian(vals, axis=0)
        mean = np.nanmean(vals, axis=0)
        std = np.nanstd(vals, axis=0)
    return med, mean, std, good.sum(axis=0), (~good).sum(axis=0)


@pytest.mark.parametrize("gain_stage", [0, 1, 2])
def test_jungfrau_uses_only_samples_of_the_run_gain(gain_stage):
    rng = np.random.default_rng(10 + gain_stage)
    adc = dark_like(rng, 9, 2, (4, 6), center=3000, sigma=20.0)
    want = (0, 1, 3)[gain_stage]
    bits = np.where(rng.random(adc.shape) < 0.2, rng.integers(0, 4, adc.shape), want)
    bits[:, 0, 0, 0] = (want + 1) % 4  # a pixel with no sample in the right gain
    data = ((bits.astype(np.uint16) << 14) | adc).astype(np.uint16)
    st = dark_stats(data, adc_bits=14, gain_stage=gain_stage)
    med, mean, std, count, rejected = jungfrau_reference(data, gain_stage)
    np.testing.assert_array_equal(st.median, med.astype(np.float32))
    np.testing.assert_allclose(st.mean, mean, rtol=1e-6)
    np.testing.assert_allclose(st.std, std, rtol=2e-6, atol=1e-6)
    np.testing.assert_array_equal(st.count, count)
    np.testing.assert_array_equal(st.rejected, rejected)
    assert np.isnan(st.median[0, 0, 0]) and st.count[0, 0, 0] == 0


def test_fourteen_bit_values_without_gain_check_ignore_the_gain_bits():
    rng = np.random.default_rng(12)
    data = rng.integers(0, 65536, size=(9, 2, 3, 5)).astype(np.uint16)
    st = dark_stats(data, adc_bits=14)
    adc = data & 0x3FFF
    np.testing.assert_array_equal(st.median, np.median(adc, axis=0))
    np.testing.assert_allclose(st.std, np.std(adc, axis=0), rtol=2e-6)
    acc = DarkAccumulator(adc_bits=14)
    acc.update(data)
    np.testing.assert_allclose(acc.result().mean, np.mean(adc, axis=0), rtol=1e-6)


def test_agipd_raw_frames_in_train_order_are_read_without_copy():
    rng = np.random.default_rng(5)
    trains, cells = 6, 4
    raw = dark_like(rng, trains * cells, 2, (8, 4))
    cell_ids = np.tile(np.arange(cells) * 2, trains)
    by_train, cell_order = agipd_raw_by_train(raw, cell_ids)
    assert np.shares_memory(by_train, raw)
    assert cell_order.tolist() == [0, 2, 4, 6]
    analog, digital = agipd_dark_stats(by_train)
    ref = raw.reshape(trains, cells, 2, 8, 4)
    np.testing.assert_array_equal(analog.median, np.median(ref[:, :, 0], axis=0))
    np.testing.assert_array_equal(digital.median, np.median(ref[:, :, 1], axis=0))
    np.testing.assert_allclose(digital.std, np.std(ref[:, :, 1], axis=0), rtol=2e-6)


def test_agipd_raw_frames_out_of_order_are_grouped_by_cell():
    rng = np.random.default_rng(6)
    raw = dark_like(rng, 12, 2, (3, 5))
    cell_ids = np.array([1, 0, 2, 0, 1, 2, 2, 1, 0, 0, 2, 1])
    by_train, cells = agipd_raw_by_train(raw, cell_ids)
    assert cells.tolist() == [0, 1, 2] and by_train.shape == (4, 3, 2, 3, 5)
    for k, cell in enumerate(cells):
        np.testing.assert_array_equal(by_train[:, k], raw[cell_ids == cell])


def test_agipd_raw_with_incomplete_trains_is_refused():
    raw = np.zeros((5, 2, 3, 5), np.uint16)
    with pytest.raises(KernelInputError, match="unequal frame counts"):
        agipd_raw_by_train(raw, np.array([0, 1, 0, 1, 0]))


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        pytest.param(np.zeros((2, 1, 3), np.float32), {}, "uint16", id="float-data"),
        pytest.param(np.zeros((2, 3), np.uint16), {}, "trains, cells", id="too-few-axes"),
        pytest.param(np.zeros((0, 1, 3), np.uint16), {}, "empty", id="no-trains"),
        pytest.param(np.zeros((2, 1, 3), np.uint16), {"adc_bits": 12}, "adc_bits",
                     id="bad-adc-bits"),
        pytest.param(np.zeros((2, 1, 3), np.uint16), {"gain_stage": 1}, "adc_bits=14",
                     id="gain-without-14-bits"),
        pytest.param(np.zeros((2, 1, 3), np.uint16), {"adc_bits": 14, "gain_stage": 3},
                     "gain_stage", id="bad-gain-stage"),
    ],
)
def test_bad_input_is_refused(data, kwargs, message):
    with pytest.raises(KernelInputError, match=message):
        dark_stats(data, **kwargs)
