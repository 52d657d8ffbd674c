"""11.5-11.7: no image updates, a slow pipeline, GPU memory, on a running pipeline."""

from __future__ import annotations

import pytest

from tests.twin._kit import IDS, dev, flowing, inject, wait

pytestmark = pytest.mark.twin


def test_module_not_sending_and_min_modules_11_5(running):
    inject(running, kind="module_not_sending", module=9)
    inject(running, kind="min_modules", value=16)
    try:
        raw = dev("raw_appender")
        wait(lambda: raw.modulesReceived == 15 and raw.updateRate == 0, 30)
        assert str(dev("aggregators", 9).state) == "ON"  # no error: the module is silent
        inject(running, kind="min_modules", value=15)  # the documented remedy
        wait(lambda: raw.updateRate > 0, 30)
    finally:
        inject(running, kind="min_modules", value=16)
        flowing(running)


def test_output_every_nth_left_at_50_11_6(running):
    inject(running, kind="output_every_nth", value=50)
    try:
        splitter = dev("splitters", 2)
        wait(lambda: splitter.inputRate == pytest.approx(0.2), 20)
    finally:
        dev("cal_manager").outputEveryNthTrain = 10
    wait(lambda: dev("splitters", 2).inputRate == pytest.approx(1.0), 20)


def test_aggressive_pulse_filter_piles_up_latency_11_6(running):
    inject(running, kind="pulse_filter", expression="range(0, 352)", every_nth=10)
    try:
        corr = dev("corrections", 1)
        wait(lambda: corr.latency > 2500, 30)
        first = float(corr.latency)
        wait(lambda: corr.latency > first + 1000, 30)  # piling up, not a fixed value
    finally:
        dev("cal_manager").pulseFilter = "range(128)"
    wait(lambda: dev("corrections", 1).latency < 2100, 60)  # recovers with safe settings


def test_wrong_daq_output_leaves_gpu_memory_low_11_7(running):
    inject(running, kind="wrong_daq_output", module=4)
    corr = dev("corrections", 4)
    try:
        wait(lambda: 0 < corr.gpuMemoryFree < 1000, 30)
        corrected = dev("corrected_appender")
        wait(lambda: corrected.modulesReceived == 15, 30)
    finally:
        corr.dataInput = IDS["splitters"][4] + ":gpu"
    flowing()


def test_gui_server_trouble_appenders_update_images_do_not_11_5(running):
    inject(running, kind="gui_server_trouble")
    try:
        gui = dev("gui_server")
        wait(lambda: gui.imageUpdateRate == 0, 20)
        assert dev("corrected_appender").updateRate > 0
    finally:
        flowing(running)
    wait(lambda: dev("gui_server").imageUpdateRate > 0, 20)
