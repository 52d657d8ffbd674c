"""Each fault kind, injected as a cause, shows the symptom the guidelines describe.

Observed only through the facility's interfaces: the Karabo client, the webservers'
HTTP API, karabo-check and the servers' log files.  Every test heals the twin again
(``sim.faults.heal`` and, where devices were affected, a RESTART).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from sim.devices.client import ensure_client, run_actions
from sim.faults import apply_fault, heal
from sim.layout import instrument_layout
from sim.scenario import parse_fault

pytestmark = pytest.mark.twin

IDS = instrument_layout("SPB").devices
ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PROXIES: dict[str, object] = {}


USED = {"splitters": [2, 4, 5], "aggregators": [0, 4, 5, 9],
        "corrections": [1, 2, 4, 8, 10, 12]}


@pytest.fixture(scope="module")
def spb(twin):
    ensure_client(str(twin.broker_url), twin.topics["SPB"])
    # Proxies are made here, outside waitUntil conditions (which cannot connect).
    for role in ("detector", "run_controller", "cal_manager", "init", "restart",
                 "raw_appender", "corrected_appender", "gui_server"):
        dev(role)
    for role, indices in USED.items():
        for i in indices:
            dev(role, i)
    return twin


def inject(twin, **fault) -> None:
    apply_fault(twin, parse_fault(fault), "SPB")


def dev(role: str, index: int | None = None):
    from karabo.middlelayer.cli import connectDevice

    device_id = IDS[role] if index is None else IDS[role][index]
    if device_id not in _PROXIES:
        _PROXIES[device_id] = connectDevice(device_id, autodisconnect=None, timeout=10)
    return _PROXIES[device_id]


def wait(condition, timeout: float = 60.0) -> None:
    from karabo.middlelayer.cli import waitUntil

    waitUntil(condition, timeout=timeout)


def holds_for(condition, seconds: float) -> bool:
    """True if ``condition`` stays true for ``seconds`` (a stall, not a slow step)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if not condition():
            return False
        time.sleep(0.25)
    return True


def restart_servers(timeout: float = 120.0) -> None:
    from karabo.middlelayer import State

    restart = dev("restart")
    wait(lambda: restart.state != State.CHANGING, timeout)
    restart.restart()
    wait(lambda: restart.state == State.ACTIVE, timeout)
    assert restart.status == "All servers restarted!"


def start_pipeline(init_timeout: float = 30.0, wait_s: float = 90.0):
    from karabo.middlelayer import State

    dev("cal_manager").initTimeout = init_timeout
    init = dev("init")
    wait(lambda: init.state in (State.ON, State.ACTIVE, State.ERROR), 20)
    init.start_pipeline()
    wait(lambda: init.state in (State.ACTIVE, State.ERROR), wait_s)
    return init


def heal_and_restart(twin) -> None:
    heal(twin, "SPB")
    restart_servers()


def karabo_check(karabo: Path) -> list[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(karabo.parent)}
    out = subprocess.run(["bash", "-c", f"source {karabo}/activate; karabo-check"],
                         capture_output=True, text=True, env=env, timeout=30)
    return [ANSI.sub("", line) for line in out.stdout.splitlines()]


def spbonc(twin, host: str) -> Path:
    return twin.hosts[host].root / "scratch" / "spbonc" / "karabo"


# ---- a running pipeline: 10.1, 10.2, 11.5, 11.6, 11.7 ---------------------------------

@pytest.fixture(scope="module")
def running(spb):
    """Pipeline started, detector sending, nth 10, filter range(128): all appenders update."""
    from karabo.middlelayer import State

    heal(spb, "SPB")
    restart_servers()
    assert start_pipeline().state == State.ACTIVE
    manager = dev("cal_manager")
    manager.outputEveryNthTrain = 10
    manager.pulseFilter = "range(128)"
    dev("detector").start()
    corrected = dev("corrected_appender")
    wait(lambda: corrected.updateRate > 0 and corrected.modulesReceived == 16, 60)
    yield spb


def flowing(twin=None) -> None:
    """Heal (when given the twin), send again, and wait until every module flows."""
    if twin is not None:
        heal(twin, "SPB")
        if str(dev("detector").state) != "ACQUIRING":
            dev("detector").start()
    raw, corrected = dev("raw_appender"), dev("corrected_appender")
    wait(lambda: raw.updateRate > 0 and raw.modulesReceived == 16
         and corrected.modulesReceived == 16, 60)


def test_daq_not_monitoring_stops_online_data_10_2(running):
    inject(running, kind="daq_not_monitoring")
    try:
        assert str(dev("run_controller").state) == "IGNORING"
        raw = dev("raw_appender")
        wait(lambda: raw.updateRate == 0 and dev("splitters", 4).inputRate == 0, 30)
        assert dev("aggregators", 4).inputRate > 0  # the detector still sends
    finally:
        flowing(running)


def test_detector_not_powered_sends_nothing_10_1(running):
    from karabo.native import KaraboError

    inject(running, kind="detector_not_sending", cause="unpowered")
    try:
        det = dev("detector")
        wait(lambda: str(det.state) == "OFF", 20)
        wait(lambda: dev("aggregators", 0).inputRate == 0, 20)
        with pytest.raises(KaraboError):
            det.start()
    finally:
        flowing(running)


def test_aggregator_in_error_drops_its_module_10_1(running):
    inject(running, kind="aggregator_error", module=5)
    try:
        agg = dev("aggregators", 5)
        wait(lambda: str(agg.state) == "ERROR", 20)
        raw = dev("raw_appender")
        wait(lambda: raw.modulesReceived == 15 and raw.updateRate == 0, 30)
        assert dev("splitters", 5).inputRate == 0
    finally:
        flowing(running)


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


def test_detector_operation_changed_fails_verification_11_4(running):
    inject(running, kind="detector_operation_changed", acquisition_rate=4.5)
    try:
        manager = dev("cal_manager")
        manager.verifyConfig()
        wait(lambda: "Verification failed" in str(manager.verificationResult), 10)
        assert "acquisition_rate is 4.5" in str(manager.verificationResult)
    finally:
        flowing(running)
    dev("cal_manager").verifyConfig()
    wait(lambda: dev("cal_manager").verificationResult == "Verification OK", 10)


# ---- restart stalls: 11.1 ---------------------------------------------------------------

def stalls_at(expected: str) -> None:
    from karabo.middlelayer import State

    restart = dev("restart")
    stop_detector()
    wait(lambda: restart.state != State.CHANGING, 120)
    restart.restart()
    wait(lambda: str(restart.status) == expected, 60)
    assert holds_for(lambda: restart.state == State.CHANGING
                     and str(restart.status) == expected, 6.0)


def stop_detector() -> None:
    det = dev("detector")
    if str(det.state) == "ACQUIRING":
        det.stop()
    wait(lambda: str(det.state) == "ON", 10)


def finishes() -> None:
    from karabo.middlelayer import State

    restart = dev("restart")
    wait(lambda: restart.state == State.ACTIVE, 120)
    assert restart.status == "All servers restarted!"


def test_new_server_not_omitted_stalls_restart_11_1(spb):
    inject(spb, kind="new_server", host="spb-br-sys-cal-4")
    try:
        stalls_at("Restarting mlspb_spb_new_4 on spb-br-sys-cal-4")
        dev("restart").omitFromRestart = "webserver, _new_"  # the documented remedy
        finishes()
    finally:
        heal(spb, "SPB")
    assert "mlspb_spb_new_4" not in "".join(karabo_check(spbonc(spb, "spb-br-sys-cal-4")))


def test_webserver_down_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_down", host="spb-br-sys-cal-3")
    try:
        lines = karabo_check(spbonc(spb, "spb-br-sys-cal-3"))
        assert any(re.match(r"webserver: down \d+ seconds", x) for x in lines), lines
        stalls_at("Restarting servers on spb-br-sys-cal-3")
    finally:
        heal(spb, "SPB")
    finishes()


def test_webserver_filter_mismatch_stalls_restart_11_1(spb):
    inject(spb, kind="webserver_filter", host="spb-br-sys-cal-2")
    try:
        run = (spbonc(spb, "spb-br-sys-cal-2") / "var/service/webserver/run").read_text()
        assert run.rstrip().endswith("--filter cppspb_spb_cal_2 pyspb_spb_cal_2 mlspb_spb_cal_")
        stalls_at("Restarting mlspb_spb_cal_2 on spb-br-sys-cal-2")
    finally:
        heal(spb, "SPB")
    finishes()


def test_bad_webserver_template_stalls_restart_11_1(spb):
    inject(spb, kind="bad_webserver_template", template="http://{host}:8008")
    try:
        stalls_at("Restarting servers on spb-br-sys-cal-0")
    finally:
        heal(spb, "SPB")
    finishes()


# ---- start pipeline fails: 11.2, 11.3 ---------------------------------------------------

def test_karabo_not_started_times_out_init_11_2(spb):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="karabo_not_started", host="spb-br-sys-cal-6")
    try:
        lines = karabo_check(spbonc(spb, "spb-br-sys-cal-6"))
        assert any(x.startswith("mlspb_spb_cal_6: down") for x in lines), lines
        init = start_pipeline(init_timeout=5)
        assert init.state == State.ERROR
        assert "timed out initializing devices" in str(dev("cal_manager").status)
        assert "Q4M1" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()


@pytest.mark.parametrize("version", [None, "11.2"], ids=["no-cuda-path", "cuda-not-installed"])
def test_gpu_server_without_cuda_times_out_init_11_2(spb, version):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="cuda_missing", host="spb-br-sys-cal-1", cuda_version=version)
    try:
        run = (spbonc(spb, "spb-br-sys-cal-1") / "var/service/mlspb_spb_cal_1/run").read_text()
        assert ("cuda-10.1" not in run) and ((version is None) == ("cuda-" not in run))
        corr = dev("corrections", 2)
        wait(lambda: str(corr.state) == "INIT" and not corr.gpuAvailable, 60)
        init = start_pipeline(init_timeout=8)
        assert init.state == State.ERROR
        assert "OFFSET_CORR_Q1M3" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()
    wait(lambda: dev("corrections", 2).gpuAvailable, 30)


def test_old_installation_on_exflonc_takes_device_ids_11_2(spb):
    from karabo.middlelayer import State

    stop_detector()
    inject(spb, kind="old_installation", modules=[2])
    try:
        old = spb.hosts["exflonc10"].root / "scratch" / "spbonc" / "karabo"
        assert any(x.startswith("mlspb_spb_cal_old: up") for x in karabo_check(old))
        # The id now belongs to the old CPU-only installation: no GPU there.
        got = run_actions(str(spb.broker_url), spb.topics["SPB"],
                          [{"device": IDS["corrections"][2], "get": ["gpuAvailable"]}])
        assert got == [{"gpuAvailable": False}]
        init = start_pipeline(init_timeout=8)
        assert init.state == State.ERROR
        assert "OFFSET_CORR_Q1M3" in str(dev("cal_manager").status)
    finally:
        heal(spb, "SPB")
    restart_servers()


def stuck_loading(corr) -> bool:
    return str(corr.state) == "CHANGING" and str(corr.offsetDate) == ""


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


def log_of(twin, host_index: int) -> str:
    path = spbonc(twin, f"spb-br-sys-cal-{host_index}")
    return (path / f"var/log/mlspb_spb_cal_{host_index}/current").read_text(errors="replace")


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
