"""Gain-stage decoding from the raw words (LPD, JUNGFRAU) and the AGIPD digital plane."""

import numpy as np
import pytest

from detectors import get_detector_type, jungfrau_word, stage_from_digital


@pytest.mark.parametrize(
    ("word", "adc", "stage"),
    [
        (0x0ABC, 0x0ABC, 0),  # bits 14-15 = 0b00: high gain
        (0x4ABC, 0x0ABC, 1),  # 0b01: medium
        (0xCABC, 0x0ABC, 2),  # 0b11: low
        (0x8ABC, 0x0ABC, 255),  # 0b10 is not used
    ],
)
def test_jungfrau_top_two_bits(word, adc, stage):
    det = get_detector_type("JUNGFRAU")
    raw = np.array([word], dtype=np.uint16)
    assert det.gain.adc(raw)[0] == adc
    assert det.gain.stage(raw)[0] == stage


@pytest.mark.parametrize(
    ("word", "adc", "stage"), [(0x0123, 0x123, 0), (0x1123, 0x123, 1), (0x2FFF, 0xFFF, 2)]
)
def test_lpd_bits_12_and_13(word, adc, stage):
    det = get_detector_type("LPD")
    raw = np.array([word], dtype=np.uint16)
    assert det.gain.adc(raw)[0] == adc
    assert det.gain.stage(raw)[0] == stage


@pytest.mark.parametrize("name", ["LPD", "JUNGFRAU"])
@pytest.mark.parametrize("stage", [0, 1, 2])
def test_encode_round_trips(name, stage):
    det = get_detector_type(name)
    adc = np.random.default_rng(stage).integers(0, det.gain.adc_max + 1, 1000)
    word = det.gain.encode(adc, stage)
    assert word.dtype == np.uint16
    np.testing.assert_array_equal(det.gain.adc(word), adc)
    assert (det.gain.stage(word) == stage).all()


def test_encode_clips_to_the_adc_range():
    det = get_detector_type("LPD")
    word = det.gain.encode(np.array([-5, 5000]), 0)
    np.testing.assert_array_equal(word, [0, 4095])


def test_encode_refuses_a_stage_the_detector_lacks():
    with pytest.raises(ValueError, match="gain stage 1 out of range"):
        get_detector_type("PNCCD").gain.encode(np.zeros(3), 1)


def test_single_gain_detectors_are_always_stage_zero():
    assert (get_detector_type("DSSC").gain.stage(np.array([0, 511])) == 0).all()


def test_agipd_needs_thresholds():
    with pytest.raises(ValueError, match="needs thresholds"):
        get_detector_type("AGIPD").gain.stage(np.zeros(2, np.uint16))


def test_agipd_stage_from_digital_thresholds():
    digital = np.array([[5000, 6000, 7000, 9000]])
    thresholds = np.array([[5500], [7500]])
    np.testing.assert_array_equal(stage_from_digital(digital, thresholds), [[0, 1, 1, 2]])


def test_thresholds_need_two_levels():
    with pytest.raises(ValueError, match="leading axis of 2"):
        stage_from_digital(np.zeros(3), np.zeros((3, 3)))


def test_jungfrau_word_puts_gain_bits_back():
    word = jungfrau_word(np.array([0x1234, 0x1234]), np.array([1, 3]))
    np.testing.assert_array_equal(word, [0x5234, 0xD234])
    with pytest.raises(ValueError):
        jungfrau_word(np.array([1]), np.array([4]))
