"""Sections 1, 2, 3 and 6 as plans on the facility's inventory (site xfel), no twin:
the ssh hops of 1, the Karabo environment of 2 for every instrument, the restart of 3,
and the single-module bridge of 6 with its reverse (6#9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.cli import EXIT_OK, EXIT_USAGE, app
from engine.loader import load_catalog
from engine.registry import default_registry
from engine.spec import ActionStep, CheckStep, ManualStep

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def plan(runbook: str, *args: str) -> dict[str, Any]:
    result = invoke("plan", runbook, "--site", "xfel", "-f", "json", *args)
    assert result.exit_code == EXIT_OK, result.output
    doc: dict[str, Any] = json.loads(result.output)
    assert "{{" not in json.dumps(doc["steps"])
    return doc


def manual(doc: dict[str, Any], step: str) -> str:
    [text] = [s["resolved"]["manual"] for s in doc["steps"] if s["id"] == step]
    return str(text)


def commands(text: str) -> list[str]:
    """The command lines of a manual step: the ones it indents."""
    return [line.strip() for line in text.splitlines() if line.startswith("  ")]


# ---- 1 Logging onto exflgateway --------------------------------------------------------

@pytest.mark.parametrize(("params", "bastion", "gateway"), [
    pytest.param([], ["ssh -X jdoe@bastion.desy.de"],
                 ["ssh -X exflgateway", "ssh -X -J jdoe@bastion.desy.de jdoe@exflgateway"],
                 id="no-vpn-x"),
    pytest.param(["vpn=true"], [], ["ssh -X jdoe@exflgateway"], id="vpn-x"),
    pytest.param(["macos=true"], ["ssh -Y jdoe@bastion.desy.de"],
                 ["ssh -Y exflgateway", "ssh -Y -J jdoe@bastion.desy.de jdoe@exflgateway"],
                 id="no-vpn-macos"),
    pytest.param(["port=7999"], ["ssh -L 7999:localhost:7999 jdoe@bastion.desy.de"],
                 ["ssh -L 7999:localhost:7999 exflgateway",
                  "ssh -L 7999:localhost:7999 -J jdoe@bastion.desy.de jdoe@exflgateway"],
                 id="no-vpn-port"),
    pytest.param(["vpn=true", "port=8123"], [],
                 ["ssh -L 8123:localhost:8123 jdoe@exflgateway"], id="vpn-port"),
])
def test_exflgateway_plan_prints_the_hops_1(params, bastion, gateway):
    args = [a for p in ["user=jdoe", *params] for a in ("-p", p)]
    doc = plan("exflgateway", *args)
    assert [s["id"] for s in doc["steps"]] == ["bastion", "gateway"]
    assert [s["source"] for s in doc["steps"]] == ["1#1", "1#2"]
    assert {s["kind"] for s in doc["steps"]} == {"manual"}
    assert commands(manual(doc, "bastion")) == bastion
    assert commands(manual(doc, "gateway")) == gateway
    if "vpn=true" in params:
        assert "no bastion hop" in manual(doc, "bastion")
        assert "bastion" not in manual(doc, "gateway")


def test_exflgateway_default_user_is_the_shells_1():
    doc = plan("exflgateway")
    assert commands(manual(doc, "bastion")) == ["ssh -X $USER@bastion.desy.de"]


# ---- 2 Karabo environment ----------------------------------------------------------------

GUIDELINES_2 = {  # instrument: (GUI server, table 2.2; SASE, table 2.3)
    "SPB": ("spb-rr-sys-con-gui1", "sa1"), "FXE": ("fxe-rr-sys-con-gui1", "sa1"),
    "SQS": ("sqs-rr-sys-con-gui1", "sa3"), "SCS": ("scs-rr-sys-con-gui1", "sa3"),
    "MID": ("mid-rr-sys-con-gui1", "sa2"), "HED": ("hed-rr-sys-con-gui1", "sa2"),
}


@pytest.mark.parametrize("instrument", list(GUIDELINES_2))
def test_karabo_environment_resolves_for_every_instrument_2(instrument):
    gui, sase = GUIDELINES_2[instrument]
    doc = plan("karabo-environment", "-i", instrument)
    assert doc["instrument"] == instrument
    assert gui in manual(doc, "gui-server")
    assert commands(manual(doc, "gui-start")) == ["source /opt/karabo/karabo/activate",
                                                  "karabo-gui"]
    assert commands(manual(doc, "ikarabo-broker")) == [
        f"export KARABO_BROKER_TOPIC={instrument}",
        f"export KARABO_BROKER=tcp://{sase}-br-sys-broker-1:7777"]
    assert commands(manual(doc, "hutch-activate")) == ["source ~/karabo/activate",
                                                       "karabo-gui"]
    [check] = [s for s in doc["steps"] if s["id"] == "get-devices"]
    assert check["resolved"]["check"] == "karabo.devices_online"
    assert check["resolved"]["with"] == {"pattern": f"^{instrument}_", "expect": "any"}
    assert check["subject"] == f"{instrument}@tcp://{sase}-br-sys-broker-1:7777"
    [finding] = [s for s in doc["steps"] if s["id"] == "no-devices"]
    assert finding["source"] == "2.1#3"


# ---- 3 Restarting online calibration -------------------------------------------------------

@pytest.mark.parametrize("instrument", ["SPB", "MID", "FXE", "SCS"])
def test_restart_online_resolves_for_the_mhz_instruments_3(instrument):
    doc = plan("restart-online", "-i", instrument)
    steps = {s["id"]: s for s in doc["steps"]}
    karabo_id = {"SPB": "SPB_DET_AGIPD1M-1", "MID": "MID_DET_AGIPD1M-1",
                 "FXE": "FXE_DET_LPD1M-1", "SCS": "SCS_DET_DSSC1M-1"}[instrument]
    assert steps["restart-servers"]["resolved"]["with"] == {
        "device": f"{karabo_id}/CAL/RESTART", "slot": "restart"}
    assert steps["start-pipeline"]["resolved"]["with"] == {
        "device": f"{karabo_id}/CAL/INIT", "slot": "start_pipeline"}
    assert steps["reset-manager"]["resolved"]["with"] == {
        "device": f"{karabo_id}/CAL/CAL_MANAGER", "slot": "reset"}
    assert all(s["resolved"]["danger"] for s in doc["steps"] if s["kind"] == "action")


def test_restart_online_is_not_a_diagnosis_3():
    result = invoke("diagnose", "restart-online", "--site", "xfel", "-i", "SPB")
    assert result.exit_code == EXIT_USAGE
    assert "is a procedure" in result.output and "Traceback" not in result.output


# ---- 6 A single module's raw data on the bridge -----------------------------------------------

@pytest.mark.parametrize(("module", "name"), [(0, "Q1M1"), (5, "Q2M2"), (15, "Q4M4")])
def test_bridge_single_module_resolves_the_devices_6(module, name):
    doc = plan("bridge-single-module", "-i", "SPB", "-p", f"module={module}")
    splitter = f"SPB_DET_AGIPD1M-1/CAL/FEM_SPLITTER_{name}"
    withs = {s["id"]: s["resolved"].get("with") for s in doc["steps"]}
    assert withs["find-splitter"] == {"devices": [splitter]}
    assert withs["gpu-off"] == {"device": splitter, "property": "outputToGpu", "value": False}
    assert withs["output-b"] == {"device": splitter, "property": "outputTo", "value": "B"}
    assert withs["train-stride"] == {"device": f"SPB_DAQ_DATA/DA/{module:02d}",
                                     "property": "DataDispatcher.trainStride", "value": 2}
    assert withs["bridge-connected"]["device"] == "SPB_DET_AGIPD1M-1/ZEROMQ/RAW"
    assert withs["bridge-connected"]["equals"] == f"{splitter}:output_1"
    assert f"{name} (channel {module})" in manual(doc, "talk-to-users")


@pytest.mark.parametrize("runbook", ["bridge-single-module", "bridge-single-module-revert"])
@pytest.mark.parametrize(("value", "message"), [
    ("16", "must be at most 15, got 16"),
    ("-1", "must be at least 0, got -1"),
    ("Q1M1", "parameter 'module' of"),
])
def test_bridge_single_module_rejects_a_bad_module_6(runbook, value, message):
    result = invoke("plan", runbook, "--site", "xfel", "-i", "SPB", "-p", f"module={value}")
    assert result.exit_code == EXIT_USAGE
    assert message in result.output
    assert "Traceback" not in result.output


def _main_path(runbook: str) -> list[tuple[str, Any]]:
    """(source, step) along the path where every check is ok and every step is done."""
    rb = load_catalog(None, default_registry()).get(runbook).runbook
    out, step_id = [], rb.start
    for _ in range(len(rb.steps)):
        if step_id == "end":
            break
        step = rb.steps[step_id]
        out.append((step.source, step))
        step_id = step.on.ok if isinstance(step, CheckStep) else step.next
    return out


def test_bridge_single_module_revert_steps_back_in_reverse_6_9():
    forward = [src for src, _ in _main_path("bridge-single-module")]
    back = [src for src, _ in _main_path("bridge-single-module-revert")]
    dedup = [s for i, s in enumerate(forward) if i == 0 or forward[i - 1] != s]
    assert dedup == [f"6#{i}" for i in range(1, 9)]
    # the reverse of 6#8 .. 6#1, after its confirmation and a stopped detector (as for 6#2)
    assert back[:2] == ["6#9", "6#2"]
    rest = [s for i, s in enumerate(back[2:]) if i == 0 or back[2 + i - 1] != s]
    assert rest == [f"6#{i}" for i in range(8, 0, -1)]
    sets = [(s.with_["property"], s.with_["value"])
            for _, s in _main_path("bridge-single-module") if isinstance(s, ActionStep)]
    undo = [(s.with_["property"], s.with_["value"])
            for _, s in _main_path("bridge-single-module-revert") if isinstance(s, ActionStep)]
    assert sets == [("outputToGpu", False), ("outputTo", "B"),
                    ("DataDispatcher.trainStride", "{{ params.train_stride }}")]
    assert undo == [("DataDispatcher.trainStride", "{{ params.train_stride }}"),
                    ("filterPulses", "{{ params.filter_pulses }}"), ("outputTo", "A"),
                    ("outputToGpu", True)]
    assert all(isinstance(s, ManualStep) and s.confirm
               for _, s in _main_path("bridge-single-module")[:1])


def test_sections_1_2_3_6_are_covered():
    result = invoke("coverage", "--sections", "1,2,3,6", "-f", "json")
    report = json.loads(result.output)
    assert [i["id"] for i in report["items"] if i["status"] == "missing"] == []
    assert report["problems"] == []
    assert result.exit_code == EXIT_OK
