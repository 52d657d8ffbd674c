"""Section 10 faults (no data on disk, no online data), on a running pipeline.

Each test injects a cause once, asserts its documented symptom, runs the diagnosis trees
of 10.1 (no-data-on-disk) and 10.2 (no-online-data) side by side as an operator would, and
heals once.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.twin._kit import IDS, Diagnosis, dev, diagnose, flowing, inject, wait

pytestmark = pytest.mark.twin

SMALL = "min_module_size=1M"  # twin runs are a few trains, not the facility's gigabytes


def both() -> tuple[Diagnosis, Diagnosis]:
    """no-data-on-disk and no-online-data, run at the same time."""
    with ThreadPoolExecutor(2) as pool:
        disk = pool.submit(diagnose, "no-data-on-disk", "SPB", SMALL)
        online = pool.submit(diagnose, "no-online-data", "SPB")
        return disk.result(), online.result()


def record() -> str:
    """Put the DAQ into RECORD; the new run's folder, as exflonc10 sees it."""
    from karabo.middlelayer import State

    rc = dev("run_controller")
    rc.record()
    wait(lambda: rc.state == State.ACQUIRING, 10)
    return f"r{int(rc.runNumber):04d}"


def appender_findings(d: Diagnosis) -> list[str]:
    return [f["id"] for f in d.findings if f["id"] in ("min-modules-too-high",
                                                       "appender-stalled")]


def test_daq_not_monitoring_stops_online_data_10_2(running):
    inject(running, kind="daq_not_monitoring")
    try:
        assert str(dev("run_controller").state) == "IGNORING"
        raw = dev("raw_appender")
        wait(lambda: raw.updateRate == 0 and dev("splitters", 4).inputRate == 0, 30)
        assert dev("aggregators", 4).inputRate > 0  # the detector still sends
        disk, online = both()
    finally:
        flowing(running)
    assert online.finding("daq-not-monitoring")["subject"] == IDS["run_controller"]
    assert disk.finding("daq-not-recording")["subject"] == IDS["run_controller"]
    # the stalled APPENDERs follow from the DAQ: not a second finding
    assert online.step("appender-after-daq")["outcome"] == "fail"
    assert appender_findings(online) == []
    assert "detector-not-sending" not in [f["id"] for f in online.findings]


@pytest.mark.parametrize(("cause", "finding"), [
    pytest.param("stopped", "detector-not-sending", id="stopped"),
    pytest.param("unpowered", "detector-not-powered", id="unpowered"),
    pytest.param("unconfigured", "detector-not-configured", id="unconfigured"),
])
def test_detector_not_sending_10_1_10_2(running, cause, finding):
    from karabo.native import KaraboError

    inject(running, kind="detector_not_sending", cause=cause)
    try:
        det = dev("detector")
        wait(lambda: str(det.state) == ("OFF" if cause == "unpowered" else "ON"), 20)
        wait(lambda: dev("aggregators", 0).inputRate == 0, 20)
        if cause == "unpowered":
            with pytest.raises(KaraboError):
                det.start()
        run = record()  # an operator records: the run stays empty
        disk, online = both()
    finally:
        flowing(running)
    for d in (disk, online):
        assert d.finding(finding)["subject"] == IDS["detector"]
    written = disk.finding("no-data-written")
    assert written["subject"] == "exflonc10"
    last = disk.step("last-run")["observed"]
    assert last["run"].endswith(f"/raw/{run}") and last["files"] == {}
    assert "daq-not-recording" not in [f["id"] for f in disk.findings]
    assert appender_findings(online) == []


@pytest.mark.parametrize("module", [pytest.param(15, id="Q4M4")])  # each more: ~25 s
def test_aggregator_in_error_drops_its_module_10_1(running, module):
    inject(running, kind="aggregator_error", module=module, reason="network card failure")
    agg, splitter, raw = dev("aggregators", module), dev("splitters", module), dev("raw_appender")
    rc = dev("run_controller")
    try:
        wait(lambda: str(agg.state) == "ERROR", 20)
        wait(lambda: raw.modulesReceived == 15 and raw.updateRate == 0, 30)
        assert splitter.inputRate == 0
        run = record()  # the other 15 modules are written
        wait(lambda: str(rc.lastRunPath).endswith(run), 30)
        disk, online = both()
    finally:
        flowing(running)
    device = IDS["aggregators"][module]
    assert disk.finding("aggregator-error")["subject"] == device
    assert [(f["subject"], f["contact"]) for f in disk.report["findings"]
            if f["id"] == "aggregator-error"] == [(device, "ITDM OCD")]
    assert disk.finding("no-data-written")["subject"] == "exflonc10"
    last = disk.step("last-run")["observed"]
    assert last["run"].endswith(f"/raw/{run}") and len(last["files"]) == 15
    assert [m for m, size in last["modules"].items() if size == 0] == [f"AGIPD{module:02d}"]
    # 10.2#5 compares min-modules with what arrives (15), not the detector's 16 modules
    assert online.finding("min-modules-too-high")["subject"] == IDS["raw_appender"]
    seen = online.step("min-modules")["observed"]
    assert seen[IDS["raw_appender"]] == {"min_modules": 16, "received": 15}
    assert seen["detector"] == {"modules": 16, "not_sending": []}
