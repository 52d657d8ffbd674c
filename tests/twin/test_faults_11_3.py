"""11.3: calibration constants are not loaded."""

from __future__ import annotations

import pytest

from tests.twin._kit import (
    dev,
    heal,
    holds_for,
    inject,
    log_of,
    restart_servers,
    stop_detector,
    stuck_loading,
    wait,
)

pytestmark = pytest.mark.twin


def test_caldb_remote_down_leaves_constants_unloaded_11_3(spb):
    stop_detector()
    inject(spb, kind="caldb_remote_down")
    try:
        dev("init").start_pipeline()
        corr = dev("corrections", 8)
        wait(lambda: "Resource temporarily" in log_of(spb, 4), 60)
        assert holds_for(lambda: stuck_loading(corr)
                         and str(dev("cal_manager").state) == "CHANGING", 5)
    finally:
        heal(spb, "SPB")
    restart_servers()


def test_condition_left_at_none_matches_no_constant_11_3(spb):
    stop_detector()
    inject(spb, kind="operating_condition", parameter="beam_energy", value="None")
    try:
        dev("init").start_pipeline()
        corr = dev("corrections", 10)
        wait(lambda: stuck_loading(corr) and "Could not find constant" in str(corr.status), 60)
        assert holds_for(lambda: stuck_loading(corr), 4)
    finally:
        heal(spb, "SPB")
    restart_servers()


def test_detector_pushing_while_constants_load_11_3(spb):
    stop_detector()
    inject(spb, kind="detector_pushing", during="constants")
    try:
        dev("init").start_pipeline()
        det, corr = dev("detector"), dev("corrections", 12)
        wait(lambda: str(det.state) == "ACQUIRING", 60)
        wait(lambda: "data arrived while loading" in str(corr.status), 60)
        assert holds_for(lambda: stuck_loading(corr)
                         and str(dev("cal_manager").state) == "CHANGING", 4)
    finally:
        heal(spb, "SPB")
    restart_servers()
