"""Geometry, source names and aggregator names, as the facility's files use them."""

import pytest

from detectors import get_detector_type


@pytest.mark.parametrize(
    ("name", "module_shape", "frame_shape", "cells", "stages", "modules"),
    [
        ("AGIPD", (512, 128), (2, 512, 128), 352, 3, 16),
        ("LPD", (256, 256), (1, 256, 256), 512, 3, 16),
        ("DSSC", (128, 512), (1, 128, 512), 800, 1, 16),
        ("JUNGFRAU", (512, 1024), (512, 1024), 16, 3, 8),
        ("EPIX100", (708, 768), (708, 768), 1, 1, 1),
        ("PNCCD", (1024, 1024), (1024, 1024), 1, 1, 1),
        ("FASTCCD", (1934, 960), (1934, 960), 1, 1, 1),
    ],
)
def test_geometry(name, module_shape, frame_shape, cells, stages, modules):
    det = get_detector_type(name)
    assert det.module_shape == module_shape
    assert det.raw.frame_shape == frame_shape
    assert det.memory_cells == cells
    assert det.gain_stages == stages
    assert det.max_modules == modules


@pytest.mark.parametrize(
    ("name", "instance", "modules"),
    [
        ("AGIPD", "AGIPD-1M", 16),
        ("AGIPD", "AGIPD-500K", 8),
        ("LPD", "LPD-1M", 16),
        ("DSSC", "DSSC-1M", 16),
        ("JUNGFRAU", "JF4M", 8),
        ("JUNGFRAU", "JF500K", 1),
    ],
)
def test_instances(name, instance, modules):
    assert get_detector_type(name).instances[instance] == modules


@pytest.mark.parametrize(
    ("name", "karabo_id", "module", "source", "da"),
    [
        ("AGIPD", "SPB_DET_AGIPD1M-1", 0, "SPB_DET_AGIPD1M-1/DET/0CH0:xtdf", "AGIPD00"),
        ("AGIPD", "MID_DET_AGIPD1M-1", 15, "MID_DET_AGIPD1M-1/DET/15CH0:xtdf", "AGIPD15"),
        ("LPD", "FXE_DET_LPD1M-1", 7, "FXE_DET_LPD1M-1/DET/7CH0:xtdf", "LPD07"),
        ("DSSC", "SCS_DET_DSSC1M-1", 3, "SCS_DET_DSSC1M-1/DET/3CH0:xtdf", "DSSC03"),
        ("JUNGFRAU", "FXE_XAD_JF1M", 1, "FXE_XAD_JF1M/DET/JNGFR01:daqOutput", "JNGFR01"),
        ("EPIX100", "MID_EXP_EPIX-1", 1, "MID_EXP_EPIX-1/DET/RECEIVER:daqOutput", "EPIX01"),
        ("PNCCD", "SQS_NQS_PNCCD1MP", 1, "SQS_NQS_PNCCD1MP/CAL/PNCCD_FMT-0:output", "PNCCD01"),
        ("FASTCCD", "SCS_CDIDET_FCCD2M", 5, "SCS_CDIDET_FCCD2M/DAQ/FCCD:daqOutput", "DA05"),
    ],
)
def test_source_and_aggregator_names(name, karabo_id, module, source, da):
    det = get_detector_type(name)
    assert det.source(karabo_id, module) == source
    assert det.karabo_da(module) == da


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("AGIPD", "image.data"),
        ("LPD", "image.cellId"),
        ("JUNGFRAU", "data.adc"),
        ("JUNGFRAU", "data.memoryCell"),
        ("EPIX100", "data.image.pixels"),
        ("PNCCD", "data.image"),
    ],
)
def test_raw_keys(name, key):
    assert key in get_detector_type(name).raw.keys


@pytest.mark.parametrize(
    ("name", "constants"),
    [
        ("AGIPD", ("Offset", "Noise", "ThresholdsDark", "BadPixelsDark")),
        ("LPD", ("Offset", "Noise", "BadPixelsDark")),
        ("DSSC", ("Offset", "Noise")),
        ("JUNGFRAU", ("Offset10Hz", "Noise10Hz", "BadPixelsDark10Hz")),
        ("EPIX100", ("OffsetEPix100", "NoiseEPix100", "BadPixelsDarkEPix100")),
        ("PNCCD", ("OffsetCCD", "NoiseCCD", "BadPixelsDarkCCD")),
        ("FASTCCD", ("OffsetCCD", "NoiseCCD", "BadPixelsDarkCCD")),
    ],
)
def test_dark_constants(name, constants):
    assert get_detector_type(name).dark_constants == constants


def test_module_numbers_follow_the_naming():
    assert list(get_detector_type("AGIPD").module_numbers(4)) == [0, 1, 2, 3]
    assert list(get_detector_type("JUNGFRAU").module_numbers(2)) == [1, 2]


@pytest.mark.parametrize(("name", "module"), [("AGIPD", 16), ("JUNGFRAU", 0), ("EPIX100", 2)])
def test_out_of_range_module_is_refused(name, module):
    with pytest.raises(ValueError, match="module numbers run from"):
        get_detector_type(name).source("X_DET_Y", module)


@pytest.mark.parametrize(
    ("name", "module", "label"),
    [
        ("AGIPD", 0, "Q1M1"),
        ("AGIPD", 5, "Q2M2"),
        ("LPD", 15, "Q4M4"),
        ("DSSC", 11, "Q3M4"),
        ("JUNGFRAU", 2, "JNGFR02"),
        ("PNCCD", 1, "PNCCD01"),
    ],
)
def test_module_labels_match_the_guidelines(name, module, label):
    assert get_detector_type(name).module_label(module) == label
