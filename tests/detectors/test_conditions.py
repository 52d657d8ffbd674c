"""Operating conditions under CalCat's names, with the database's drop rules."""

import pytest

from detectors import ConditionsError, get_detector_type

AGIPD_BASE = dict(sensor_bias_voltage=300, memory_cells=352, acquisition_rate=1.1)
JF_BASE = dict(sensor_bias_voltage=180, memory_cells=1, integration_time=10, gain_setting=0)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param(
            dict(AGIPD_BASE, gain_setting=0, gain_mode=0, integration_time=12),
            {
                "Sensor Bias Voltage": 300.0,
                "Pixels X": 512.0,
                "Pixels Y": 128.0,
                "Memory cells": 352.0,
                "Acquisition rate": 1.1,
                "Gain setting": 0.0,
            },
            id="agipd-defaults-dropped",
        ),
        pytest.param(
            dict(AGIPD_BASE, gain_setting=1, gain_mode=1, integration_time=20),
            {
                "Sensor Bias Voltage": 300.0,
                "Pixels X": 512.0,
                "Pixels Y": 128.0,
                "Memory cells": 352.0,
                "Acquisition rate": 1.1,
                "Gain setting": 1.0,
                "Gain mode": 1.0,
                "Integration time": 20.0,
            },
            id="agipd-fixed-gain-kept",
        ),
        pytest.param(
            AGIPD_BASE,
            {
                "Sensor Bias Voltage": 300.0,
                "Pixels X": 512.0,
                "Pixels Y": 128.0,
                "Memory cells": 352.0,
                "Acquisition rate": 1.1,
            },
            id="agipd-gain-setting-unknown",
        ),
    ],
)
def test_agipd_conditions(values, expected):
    assert get_detector_type("AGIPD").conditions(**values) == expected


def test_jungfrau_drops_dynamic_gain_mode_and_default_timeout():
    cond = get_detector_type("JUNGFRAU").conditions(**JF_BASE, gain_mode=0, exposure_timeout=25)
    assert cond == {
        "Sensor Bias Voltage": 180.0,
        "Memory Cells": 1.0,
        "Pixels X": 1024.0,
        "Pixels Y": 512.0,
        "Integration Time": 10.0,
        "Sensor temperature": 291.0,
        "Gain Setting": 0.0,
    }


def test_jungfrau_keeps_fixed_gain_mode_and_other_timeout():
    cond = get_detector_type("JUNGFRAU").conditions(**JF_BASE, gain_mode=1, exposure_timeout=20)
    assert cond["Gain mode"] == 1.0
    assert cond["Exposure timeout"] == 20.0


@pytest.mark.parametrize(
    ("parallel_gain", "order", "extra"),
    [
        (False, None, {}),
        (True, None, {"Parallel gain": 1.0}),
        (False, "3,2,1,", {"Memory cell order": "3,2,1,"}),
    ],
)
def test_lpd_drops_parallel_gain_off_and_missing_cell_order(parallel_gain, order, extra):
    cond = get_detector_type("LPD").conditions(parallel_gain=parallel_gain, memory_cell_order=order)
    assert cond == {
        "Sensor Bias Voltage": 250.0,
        "Memory cells": 512.0,
        "Pixels X": 256.0,
        "Pixels Y": 256.0,
        "Feedback capacitor": 5.0,
        **extra,
    }


def test_dssc_leaves_out_unknown_optional_parameters():
    cond = get_detector_type("DSSC").conditions(
        sensor_bias_voltage=100, memory_cells=400, target_gain=2
    )
    assert cond == {
        "Sensor Bias Voltage": 100.0,
        "Memory cells": 400.0,
        "Pixels X": 512.0,
        "Pixels Y": 128.0,
        "Target gain": 2.0,
    }


@pytest.mark.parametrize(
    ("name", "values", "names"),
    [
        (
            "EPIX100",
            dict(sensor_bias_voltage=200, integration_time=10, in_vacuum=True),
            [
                "Sensor Bias Voltage",
                "Memory cells",
                "Pixels X",
                "Pixels Y",
                "Integration time",
                "Sensor temperature",
                "In vacuum",
            ],
        ),
        (
            "PNCCD",
            dict(
                sensor_bias_voltage=300,
                integration_time=70,
                sensor_temperature=233,
                gain_setting=16,
            ),
            [
                "Sensor Bias Voltage",
                "Memory cells",
                "Pixels X",
                "Pixels Y",
                "Integration Time",
                "Sensor Temperature",
                "Gain Setting",
            ],
        ),
        (
            "FASTCCD",
            dict(
                sensor_bias_voltage=79, integration_time=1, sensor_temperature=233, gain_setting=8
            ),
            [
                "Sensor Bias Voltage",
                "Memory cells",
                "Pixels X",
                "Pixels Y",
                "Integration Time",
                "Sensor Temperature",
                "Gain Setting",
            ],
        ),
    ],
)
def test_camera_parameter_names(name, values, names):
    assert list(get_detector_type(name).conditions(**values)) == names


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConditionsError) as info:
        get_detector_type("AGIPD").conditions(sensor_bias_voltage="high", bias=3)
    message = str(info.value)
    assert "unknown parameter 'bias'" in message
    assert "sensor_bias_voltage must be a finite number" in message
    assert "memory_cells ('Memory cells') is required" in message
    assert "acquisition_rate ('Acquisition rate') is required" in message


def test_text_parameter_refuses_numbers():
    with pytest.raises(ConditionsError, match="memory_cell_order must be text"):
        get_detector_type("LPD").conditions(memory_cell_order=3)


def test_nan_is_refused():
    with pytest.raises(ConditionsError, match="finite number"):
        get_detector_type("DSSC").conditions(sensor_bias_voltage=float("nan"), memory_cells=1)
