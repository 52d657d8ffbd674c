"""Sections 2.3, 3 and 6 against the twin: getDevices answers, a plan of the restart
changes nothing the twin can observe (and the snapshot that says so does see a real
change), and the single-module runbooks name devices and properties the twin has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from sim.snapshot import Snapshot, diff, take
from tests.twin._kit import IDS, diagnose, stop_detector

pytestmark = pytest.mark.twin

RUNBOOK = str(Path(sys.executable).parent / "runbook")


def plan(tmp_path: Path, runbook: str, *params: str) -> dict[str, Any]:
    """`runbook plan <runbook> --site sim --instrument SPB -o plan.json`, as an operator."""
    out = tmp_path / f"{runbook}.plan.json"
    argv = [RUNBOOK, "plan", runbook, "--site", "sim", "--instrument", "SPB", "-o", str(out)]
    for p in params:
        argv += ["-p", p]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ))
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def quiet(twin, within: float = 60.0) -> Snapshot:
    """A snapshot once the twin has settled (two in a row without a difference): after
    the detector stops, rates and latencies take a few seconds to drain to zero."""
    deadline = time.monotonic() + within
    last = take(twin, in_process=True)
    changes: list[str] = []
    while time.monotonic() < deadline:
        now = take(twin, in_process=True)
        changes = diff(last, now)
        if not changes:
            return now
        last = now
        time.sleep(0.5)
    raise AssertionError(f"the twin does not settle within {within:g} s: {changes}")


def test_get_devices_answers_on_the_instruments_broker_2_3(spb):
    d = diagnose("karabo-environment", "SPB")
    assert d.code == 0, d.report
    step = d.step("get-devices")
    assert step["outcome"] == "ok"
    assert step["subject"] == f"{spb.topics['SPB']}@{spb.broker_url}"
    assert IDS["restart"] in step["observed"]["present"]
    assert not d.findings and not d.unknowns


def test_get_devices_with_the_broker_down_is_unknown_2_3(spb, tmp_path, monkeypatch):
    from sim.broker import free_port

    down = f"amqp://guest:guest@127.0.0.1:{free_port()}"
    site = tmp_path / "sites" / "down" / "site.yaml"
    site.parent.mkdir(parents=True)
    site.write_text(f"site: down\nextends: xfel\ntransport:\n  karabo:\n"
                    f"    broker: \"{down}\"\n    timeout: 5\n")
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path / "sites"))
    res = subprocess.run([RUNBOOK, "diagnose", "karabo-environment", "--site", "down",
                          "-i", "SPB", "-f", "json"], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ))
    assert res.returncode == 2, (res.stdout[-3000:], res.stderr[-3000:])
    report = json.loads(res.stdout)
    [unknown] = report["unknowns"]
    assert unknown["id"] == "get-devices" and unknown["subject"] == f"SPB@{down}"
    assert "cannot connect to the Karabo broker" in unknown["reason"]
    assert report["findings"] == []


def test_plan_of_restart_online_changes_nothing_3_4(spb, tmp_path):
    before = quiet(spb)
    doc = plan(tmp_path, "restart-online")
    after = take(spb, in_process=True)
    assert diff(before, after) == []
    steps = {s["id"]: s for s in doc["steps"]}
    assert {s["outcome"] for s in doc["steps"]} == {"planned"}
    assert "{{" not in json.dumps(doc["steps"])
    restart = steps["restart-servers"]
    assert restart["subject"] == IDS["restart"] == "SPB_DET_AGIPD1M-1/CAL/RESTART"
    assert restart["resolved"]["action"] == "karabo.call"
    assert restart["resolved"]["with"] == {"device": IDS["restart"], "slot": "restart"}
    assert restart["resolved"]["danger"] is True
    assert steps["start-pipeline"]["resolved"]["with"] == {"device": IDS["init"],
                                                          "slot": "start_pipeline"}
    for device in (IDS["restart"], IDS["init"], IDS["cal_manager"]):
        assert "unreadable" not in before.devices[device], before.devices[device]


def test_snapshot_sees_a_property_change_and_its_restore(spb):
    from karabo.middlelayer import setWait

    manager = IDS["cal_manager"]
    before = quiet(spb)
    old = before.devices[manager]["initTimeout"]
    setWait(manager, initTimeout=old + 1.0)
    try:
        changed = diff(before, take(spb, in_process=True))
    finally:
        setWait(manager, initTimeout=old)
    assert changed == [f"device {manager}: initTimeout {old!r} -> {old + 1.0!r}"]
    assert diff(before, take(spb, in_process=True)) == []


@pytest.mark.parametrize("runbook", ["bridge-single-module", "bridge-single-module-revert"])
def test_single_module_runbooks_name_what_the_twin_has_6(spb, tmp_path, runbook):
    doc = plan(tmp_path, runbook, "module=5")
    now = take(spb, in_process=True)
    splitter, aggregator = IDS["splitters"][5], IDS["aggregators"][5]
    sets = [s["resolved"]["with"] for s in doc["steps"]
            if s["kind"] == "action" and s["resolved"]["action"] == "karabo.set"]
    assert {w["device"] for w in sets} == {splitter, aggregator}
    for w in sets:
        assert w["property"] in now.devices[w["device"]], (w, now.devices[w["device"]])
    steps = {s["id"]: s for s in doc["steps"]}
    train = steps["train-stride"]["resolved"]["with"]
    assert train["device"] == aggregator and train["property"] == "DataDispatcher.trainStride"
    if runbook == "bridge-single-module":
        assert train["value"] == 2
        bridge = steps["bridge-connected"]["resolved"]["with"]
        assert bridge["property"] in now.devices[IDS["bridge"]]
        assert bridge["equals"] == f"{splitter}:output_1"


def test_run_of_restart_online_restarts_the_calibration_servers_only_3_4(spb):
    stop_detector()   # 3.2: no data during the restart
    before = quiet(spb)
    res = subprocess.run([RUNBOOK, "run", "restart-online", "--site", "sim", "-i", "SPB",
                          "--yes", "-f", "json"], input="y\n" * 20, capture_output=True,
                         text=True, timeout=600, env=dict(os.environ))
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    report = json.loads(res.stdout[res.stdout.index('{\n  "runbook": '):])  # after prompts
    outcome = {s["id"]: s["outcome"] for s in report["steps"]}
    assert outcome["restart-servers"] == "done" and outcome["start-pipeline"] == "done"
    assert outcome["servers-restarted"] == outcome["pipeline-initialized"] == "ok"
    assert report["findings"] == [] and report["unknowns"] == []
    changes = diff(before, take(spb, in_process=True))
    restarted = {line.split(":")[0] for line in changes
                 if line.startswith("service ") and ": pid " in line}
    assert restarted == {f"service spb-br-sys-cal-{i}/spbonc/mlspb_spb_cal_{i}"
                         for i in range(8)}, changes
    assert not [c for c in changes if "daq_ctrl" in c or "webserver" in c or "rcal" in c]
