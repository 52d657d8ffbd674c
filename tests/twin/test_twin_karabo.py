"""The twin's Karabo side through the facility's interfaces: broker, karabo-check, the
webserver's HTTP API, and the pipeline devices through the Karabo client (3.4, 10.2, 11)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from sim.broker import Broker, free_port, port_open
from tests.twin._kit import dev, karabo_check, restart_servers, start_pipeline, stop_detector, wait

pytestmark = pytest.mark.twin

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CHECK_LINE = re.compile(r"^(\S+): up \(pid \d+\) \d+ seconds, normally down, running$")


def test_broker_starts_on_loopback_and_stops_by_pid(tmp_path):
    port = free_port()
    broker = Broker.start(tmp_path, port=port)
    pids = list(broker.pids)
    try:
        assert broker.url == f"amqp://guest:guest@127.0.0.1:{port}"
        assert port_open("127.0.0.1", port)
        assert all(Path(f"/proc/{p}").exists() for p in pids)
    finally:
        broker.stop()
    assert not port_open("127.0.0.1", port)
    assert not any(Path(f"/proc/{p}").exists() and "Z" not in
                   Path(f"/proc/{p}/stat").read_text().split()[2] for p in pids)


def test_karabo_check_prints_the_guidelines_lines(spb):
    host = spb.hosts["spb-br-sys-cal-2"]
    lines = karabo_check(host.root / "scratch" / "spbonc" / "karabo")
    found = {m.group(1) for m in map(CHECK_LINE.match, lines) if m}
    assert found == {"webserver", "mlspb_spb_cal_2"}, lines
    run = (host.root / "scratch/spbonc/karabo/var/service/webserver/run").read_text()
    assert "karabo-webserver serverId=webserver \\\n--port 8080 --filter" in run


def test_webserver_api_restarts_a_server_and_refuses_filtered_ones(spb):
    host = spb.hosts["spb-br-sys-cal-5"]
    base = f"http://{host.address}:8080/api"
    with httpx.Client(timeout=5, trust_env=False) as client:
        listing = client.get(f"{base}/servers.json").json()
        servers = {s["name"]: s for s in listing["servers"]}
        assert set(servers) == {"webserver", "mlspb_spb_cal_5"}
        assert servers["mlspb_spb_cal_5"]["control_allowed"] is True
        refused = client.put(f"{base}/servers/webserver.json",
                             json={"server": {"command": "kill"}}).json()
        assert refused["success"] is False
        since = servers["mlspb_spb_cal_5"]["since"]
        done = client.put(f"{base}/servers/mlspb_spb_cal_5.json",
                          json={"server": {"command": "kill"}}).json()
        assert done["success"] is True
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            one = client.get(f"{base}/servers/mlspb_spb_cal_5.json").json()
            if one["servers"][0]["since"] != since and one["status_ok"]:
                break
            time.sleep(0.5)
        else:
            pytest.fail("the killed server did not come back up")
        other = spb.hosts["spb-br-sys-cal-6"]
        names = {s["name"] for s in client.get(
            f"http://{other.address}:8080/api/servers.json").json()["servers"]}
        assert "mlspb_spb_cal_6" in names and "mlspb_spb_cal_5" not in names


def test_restart_start_pipeline_then_data_reaches_appenders_3_4_10_2(spb):
    """One sequence, not two tests: the data part reads the restart's settings."""
    from karabo.middlelayer import State

    stop_detector()
    restart_servers()
    manager = dev("cal_manager")
    assert manager.outputEveryNthTrain == 50
    init = start_pipeline()
    assert init.state == State.ACTIVE, init.status
    corr = dev("corrections", 7)
    assert corr.state == State.ACTIVE
    assert re.match(r"\d{4}-\d\d-\d\dT", str(corr.offsetDate))
    assert corr.gpuMemoryFree == 0  # 11.7: nothing free shown until data arrives

    det = dev("detector")
    det.start()
    splitter, corr = dev("splitters", 3), dev("corrections", 3)
    raw = dev("raw_appender")
    wait(lambda: raw.updateRate > 0 and corr.gpuMemoryFree > 0, 30)
    assert splitter.inputRate == pytest.approx(10.0 / 50)  # every 50th train after restart
    assert raw.modulesReceived == 16
    manager.outputEveryNthTrain = 10
    manager.pulseFilter = "range(128)"
    gain, corrected = dev("gain_adjusts", 3), dev("corrected_appender")
    wait(lambda: gain.state == State.ACTIVE and corrected.updateRate > 0, 60)
    assert corrected.modulesReceived == 16
    assert 1000 < corrected.latency < 2500
    stop_detector()


def test_recording_writes_raw_files_that_extra_data_opens_10_1(spb):
    from extra_data import RunDirectory
    from karabo.middlelayer import State

    det, daq = dev("detector"), dev("run_controller")
    if str(det.state) != "ACQUIRING":
        det.start()
    try:
        agg = dev("aggregators", 0)
        wait(lambda: agg.outputRate > 0, 30)
        daq.record()
        wait(lambda: daq.state == State.ACQUIRING, 10)
        run = f"r{int(daq.runNumber):04d}"
        wait(lambda: str(daq.lastRunPath).endswith(run), 30)  # trainsPerModule recorded
        daq.monitor()
        wait(lambda: daq.state == State.MONITORING and str(daq.lastRunPath) != "", 120)
    finally:
        stop_detector()
    run_dir = Path(str(daq.lastRunPath))
    assert run_dir.name == f"r{int(daq.runNumber):04d}"
    files = sorted(p.name for p in run_dir.glob("RAW-*-AGIPD*.h5"))
    assert len(files) == 16 and files[0].startswith(f"RAW-R{int(daq.runNumber):04d}-AGIPD00-S")
    run = RunDirectory(run_dir)
    assert len(run.train_ids) > 0
