"""11.3: calibration constants are not loaded.

Each fault test injects the cause once, asserts the documented symptom, runs the
`constants-not-loaded` diagnosis as an operator would, and heals once: the cause removed,
the detector stopped, and no server restart (the next start pipeline resets the stuck
devices, 3.6).
"""

from __future__ import annotations

import pytest

from sim.layout import instrument_layout
from tests.twin._kit import (
    IDS,
    dev,
    diagnose,
    heal_idle,
    holds_for,
    inject,
    log_of,
    stop_detector,
    stuck_loading,
    wait,
)

pytestmark = pytest.mark.twin

TREE = "constants-not-loaded"
# The twin installs the calibrationDbRemote server on the first host of 11.3's table only
# (sim/layout.py); the other hosts of the group have no installation to stop.
CALDB_HOST = instrument_layout("SPB").caldb_hosts[0]
CALDB_SERVER = "pythonserver_sa1_daq_rcal_0"


def _ids(diagnosis) -> set[str]:
    return {f["id"] for f in diagnosis.findings}


@pytest.mark.parametrize("host", [pytest.param(CALDB_HOST, id=CALDB_HOST)])
def test_caldb_remote_down_leaves_constants_unloaded_11_3(spb, host):
    stop_detector()
    inject(spb, kind="caldb_remote_down", host=host)
    try:
        dev("init").start_pipeline()
        corr = dev("corrections", 8)
        wait(lambda: "Resource temporarily" in log_of(spb, 4), 60)
        assert holds_for(lambda: stuck_loading(corr)
                         and str(dev("cal_manager").state) == "CHANGING", 5)

        found = diagnose(TREE)
        down = found.finding("caldb-server-down")
        assert down["subject"] == host
        assert CALDB_SERVER in down["evidence"] and host in down["evidence"]
        greps = {s["subject"]: s["outcome"] for s in found.steps
                 if s["id"] == "unavailable-grep"}
        assert greps["spbonc@spb-br-sys-cal-4"] == "fail", greps
        assert _ids(found) == {"caldb-server-down"}
    finally:
        heal_idle(spb)


@pytest.mark.parametrize(("none_at", "parameter", "value"), [
    pytest.param("gain_setting", "memory_cells", "64", id="gain_setting-None-memory_cells-64"),
])
def test_condition_left_at_none_matches_no_constant_11_3(spb, none_at, parameter, value):
    """A field left at "None" and a value for which no constant exists, at once."""
    stop_detector()
    inject(spb, kind="operating_condition", parameter=none_at, value="None")
    inject(spb, kind="operating_condition", parameter=parameter, value=value)
    try:
        dev("init").start_pipeline()
        corr = dev("corrections", 10)
        wait(lambda: stuck_loading(corr) and "Could not find constant" in str(corr.status), 60)
        assert holds_for(lambda: stuck_loading(corr), 4)

        found = diagnose(TREE)
        assert found.finding("condition-invalid")["subject"] == none_at
        assert found.finding("conditions-differ")["subject"] == parameter
        assert _ids(found) == {"condition-invalid", "conditions-differ"}
    finally:
        heal_idle(spb)


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

        found = diagnose(TREE)
        assert found.finding("detector-pushing")["subject"] == IDS["detector"]
        assert found.step("load-interrupted")["outcome"] == "fail"
        assert _ids(found) == {"detector-pushing"}
    finally:
        heal_idle(spb)


def test_running_pipeline_has_its_constants_11_3(running):
    found = diagnose(TREE)
    assert found.code == 0, (found.findings, found.unknowns)
    assert [s["id"] for s in found.steps] == ["dates"]
