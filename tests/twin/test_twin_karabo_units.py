"""Pure parts of the twin's Karabo side: operating conditions, latency, layouts,
run files and scenario files (no broker, no servers)."""

from __future__ import annotations

import re

import pytest

from detectors import ConditionsError
from engine.errors import ValidationError
from sim.caldb_twin import calcat_conditions
from sim.devices.pipeline import latency_ms
from sim.devices.restart import omitted
from sim.karabo_env import ServerSpec, WebserverSpec, server_run_file, webserver_run_file
from sim.layout import INSTRUMENTS, default_constants, instrument_layout, module_name
from sim.scenario import FAULT_KINDS, load_scenario, parse_fault


def test_latency_matches_the_guidelines_figures_11_6():
    assert latency_ms(128, 256) == pytest.approx(1500)
    assert latency_ms(256, 256) == pytest.approx(2000)


def test_manager_conditions_become_the_dark_injections_conditions_11_4():
    rows = dict(INSTRUMENTS["SPB"].conditions)
    assert calcat_conditions("AGIPD", rows) == {
        "Sensor Bias Voltage": 300.0, "Memory cells": 352.0, "Acquisition rate": 1.1,
        "Gain setting": 0.0, "Pixels X": 512.0, "Pixels Y": 128.0}
    assert calcat_conditions("AGIPD", dict(rows, memory_cells="202"))["Memory cells"] == 202.0
    with pytest.raises(ConditionsError, match="memory_cells"):
        calcat_conditions("AGIPD", dict(rows, memory_cells="None"))
    with pytest.raises(ConditionsError, match="unknown parameter 'photon_energy'"):
        calcat_conditions("AGIPD", dict(rows, photon_energy="9.3"))


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_the_default_constants_have_conditions_that_the_db_takes(name):
    ins = INSTRUMENTS[name]
    for entry in default_constants(name):
        assert calcat_conditions(ins.detector_type, entry["conditions"])


def test_omit_from_restart_expressions_11_1():
    assert omitted("webserver", "webserver")
    assert omitted("mlspb_spb_new_4", "webserver, _new_")
    assert not omitted("mlspb_spb_cal_4", "webserver, _new_")
    assert omitted("a(b", "a(")  # a bad regex still matches as text


@pytest.mark.parametrize("name", sorted(INSTRUMENTS))
def test_layout_places_every_module_once(name):
    layout = instrument_layout(name)
    ids = layout.devices
    placed = [d for plan in layout.installs for s in plan.servers for d in s.devices]
    assert len(placed) == len(set(placed))
    for role in ("splitters", "corrections", "aggregators"):
        assert len(ids[role]) == 16 and set(ids[role]) <= set(placed)
    for role in ("cal_manager", "init", "restart", "detector", "run_controller"):
        assert ids[role] in placed
    assert len(layout.restart_hosts) == 8
    assert module_name(0) == "Q1M1" and module_name(15) == "Q4M4"


def test_restart_device_ids_follow_the_guidelines_3_4():
    assert instrument_layout("SPB").devices["restart"] == "SPB_DET_AGIPD1M-1/CAL/RESTART"
    assert instrument_layout("FXE").devices["init"] == "FXE_DET_LPD1M-1/CAL/INIT"
    assert instrument_layout("SCS").devices["cal_manager"] == "SCS_DET_DSSC1M-1/CAL/CAL_MANAGER"
    assert instrument_layout("FXE").restart_hosts[0] == "sa1-br-sys-cal-0"


def test_run_files_are_shaped_like_the_guidelines_11_1_11_2():
    web = webserver_run_file(WebserverSpec(filter=("cppspb_spb_cal_1", "mlspb_spb_cal_1")))
    assert web.splitlines()[3:] == [
        "exec envdir ../../environment env \\",
        "karabo-webserver serverId=webserver \\",
        "--port 8080 --filter cppspb_spb_cal_1 mlspb_spb_cal_1"]
    spec = ServerSpec("mlspb_spb_cal_1", "mlSPB/spb_cal_1", ("TwinSplitter",),
                      {"X/Y/Z": {"classId": "TwinSplitter"}}, cuda="10.1",
                      host_name="spb-br-sys-cal-1")
    lines = server_run_file(spec).splitlines()
    assert lines[3:6] == ["exec envdir ../../environment env \\",
                          "PATH=/usr/local/cuda-10.1/bin/:$PATH \\",
                          "karabo-middlelayerserver serverId=mlSPB/spb_cal_1 \\"]


def test_scenario_file_lists_problems_with_positions(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("instrument: SPB\nfaults:\n  - kind: webserver_down\n"
                    "    host: spb-br-sys-cal-3\n  - kind: module_not_sending\n    module: 5\n")
    scenario = load_scenario(good)
    assert [f.kind for f in scenario.faults] == ["webserver_down", "module_not_sending"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("instrument: SPB\nfaults:\n  - kind: webserver_down\n    hots: x\n"
                   "  - kind: module_not_sending\n    module: 16\n")
    with pytest.raises(ValidationError) as err:
        load_scenario(bad)
    text = "\n".join(err.value.problems)
    assert f"{bad}:4:5: unknown key 'hots'" in text
    assert f"{bad}:6:" in text and "module" in text


def test_every_fault_kind_is_documented():
    doc = (__import__("pathlib").Path(__file__).parents[2] / "docs" / "scenarios.md")
    text = doc.read_text()
    documented = re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE)
    assert sorted(documented) == sorted(FAULT_KINDS)  # each kind once, and no other
    with pytest.raises(ValidationError):
        parse_fault({"kind": "no_such_fault"})
