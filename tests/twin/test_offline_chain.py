"""The chain that the guidelines are about (4, 5, 7, 8, 11.3, 12): a dark characterization
requested at the webservice runs as a Slurm job as xcal, injects through the offline
calibrationDbRemote access points, writes its report where section 8 says; the online
pipeline, started again, loads the new constants; disabling them (7) brings back the
previous ones.  One full twin with the webservice, its own topic."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from caldb.remote_client import RemoteClient, endpoints_of
from sim import caldb_twin, mutations, offline, operate
from sim.devices import client as karabo_client
from sim.devices.client import KaraboClientError, run_actions
from sim.faults import apply_fault, heal
from sim.layout import instrument_layout
from sim.rawdata import write_raw_run
from sim.scenario import parse_fault
from sim.twin import Twin
from tests.twin._kit import dark_request, diagnose, own_twin, poll
from tests.twin.test_diagnose_e2e import NOT_ON_TWIN
from tests.twin.test_dry_run_twin import crashed, refused, walk_all

pytestmark = pytest.mark.twin

IDS = instrument_layout("SPB").devices
KARABO_ID = "SPB_DET_AGIPD1M-1"
MODULE = 3
PROPOSAL, RUNS = 900201, (20, 21, 22)
SEEDED = "2024-03-12T09:14:03"
TAKEN = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)   # when the dark runs were taken


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    yield from own_twin(tmp_path_factory.mktemp("chain"))


def _act(twin: Twin, *actions: dict[str, Any]) -> list[Any]:
    return run_actions(str(twin.broker_url), twin.topics["SPB"], list(actions))


def _dates(twin: Twin) -> tuple[str, str]:
    """The Offset dates of the characterized module and of a neighbour."""
    mine, other = _act(twin, {"device": IDS["corrections"][MODULE], "get": ["offsetDate"]},
                       {"device": IDS["corrections"][MODULE - 1], "get": ["offsetDate"]})
    return str(mine["offsetDate"]), str(other["offsetDate"])


def test_12_1_offline_access_points_answer_and_log_as_the_guidelines_show(full: Twin) -> None:
    address = full.hosts[offline.HOST].address
    client = RemoteClient(endpoints_of(caldb_twin.max_web_interface(address)), timeout_s=10)
    assert client.ping().startswith(caldb_twin.MAX_WEB_PREFIX)
    log = _log(full)
    text = poll("the access points' log", lambda: log.exists() and log.read_text(), 30)
    assert f"INFO {caldb_twin.MAX_WEB_PREFIX}0 : Waiting on data" in text


def test_a_twin_of_another_topic_is_asked_through_one_kept_client_process(full: Twin) -> None:
    """This process's own client is bound to the session twins' topic (or to none): this
    twin's topic is asked through a child kept for it, which an error does not end and
    the twin's `down` (here: closing its prefix) does."""
    init = {"device": IDS["init"], "get": ["state"]}
    [first] = _act(full, init)
    child = karabo_client._children[full.topics["SPB"]]
    with pytest.raises(KaraboClientError, match="not running|TimeoutError"):
        run_actions(str(full.broker_url), full.topics["SPB"],
                    [{"device": "SPB_NO/SUCH/DEVICE", "get": ["state"]}], timeout=2)
    assert _act(full, init) == [first]
    assert karabo_client._children[full.topics["SPB"]] is child and child.proc.poll() is None
    karabo_client.close_children(full.topic_prefix)
    assert full.topics["SPB"] not in karabo_client._children and child.proc.poll() is not None
    assert _act(full, init) == [first]
    assert karabo_client._children[full.topics["SPB"]].proc.pid != child.proc.pid


@pytest.mark.timeout(600)
def test_dark_request_to_pipeline_constants_and_disable_brings_back_the_old(
        full: Twin) -> None:
    operate.online(full, "SPB")
    before = _dates(full)
    assert before == (SEEDED, SEEDED), before

    for gain, run in enumerate(RUNS):
        write_raw_run(full.dir, "SPB", 202031, PROPOSAL, run, "AGIPD", KARABO_ID,
                      modules=[MODULE], cells=352, trains=2, gain_stage=gain, seed=run,
                      when=TAKEN)
    reply = dark_request(full, proposal=PROPOSAL, runs=list(RUNS))
    assert reply["status"] == "SUCCESS", reply
    home = full.hosts[offline.HOST].home("xcal")
    temp = home / Path(reply["temp"]).relative_to("/home/xcal")
    assert temp.is_dir()
    def ended() -> str | None:
        if not temp.exists():
            return "deleted"  # the job deletes its temp folder only on success (8.1)
        outs = list(temp.glob("slurm-*.out"))
        text = outs[0].read_text() if outs else ""
        return text if "finished with exit status" in text else None

    assert poll("the dark job to end", ended, 240, interval=1) == "deleted"
    reports = full.dir / "gpfs" / "exfel" / "d" / "cal" / "caldb_store" / "xfel" / "reports"
    found = sorted((reports / "SPB" / KARABO_ID / "dark").glob(f"dark_{PROPOSAL:06d}_*"))
    assert found and (found[-1] / "index.html").exists(), found
    log = _log(full).read_text()
    assert "successfully" in log and "Start writing to Calibration Catalogue..." in log

    operate.start_pipeline_again(full, "SPB")
    assert _dates(full) == (TAKEN.strftime("%Y-%m-%dT%H:%M:%S"), SEEDED)

    physical = f"{instrument_layout('SPB').instrument.physical_prefix}{MODULE:02d}"
    day = f"{TAKEN:%Y-%m-%d}"
    res = subprocess.run(
        [str(Path(sys.executable).parent / "runbook"), "run", "disable-constants", "--site",
         "sim", "-i", "SPB", "--yes", "-p", f"physical_device={physical}",
         "-p", f"start_from={day}T00:00:00", "-p", f"start_to={day}T23:59:59",
         "-p", "why=faulty darks of the chain test"],
        capture_output=True, text=True, timeout=120, input="y\ny\n")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    operate.start_pipeline_again(full, "SPB")
    assert _dates(full) == (SEEDED, SEEDED)


def _log(twin: Twin) -> Path:
    return (twin.hosts[offline.HOST].scratch("xcal") / "karabo" / "var" / "log"
            / caldb_twin.MAX_WEB_SERVER / "current")


def _runbook(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "runbook"), *argv, "--site", "sim",
                           "-i", "SPB"], capture_output=True, text=True, timeout=240,
                          input="y\n" * 5)


def test_4_1_offline_login_reaches_xcal_and_its_environment(full: Twin) -> None:
    res = _runbook("run", "offline-login", "--yes")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_12_a_healthy_twin_has_no_caldb_remote_findings(full: Twin) -> None:
    for tree in ("caldb-remote-logs", "caldb-remote-errors"):
        found = diagnose(tree)
        assert found.code == 0 and found.findings == [], (tree, found.report)


def test_12_2_overloaded_access_points_are_found_and_a_restart_clears_them(
        full: Twin) -> None:
    apply_fault(full, parse_fault({"kind": "caldb_remote_overloaded"}), "SPB")
    try:
        found = poll("the silent access points found", lambda: (d := diagnose(
            "caldb-remote-errors", "SPB", "grace_seconds=3")).findings and d, 60, interval=2)
        assert [f["id"] for f in found.findings] == ["not-responding"], found.report
        assert found.finding("not-responding")["subject"] == caldb_twin.MAX_WEB_SERVER
        res = _runbook("run", "restart-caldb-remote", "--yes")
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        address = full.hosts[offline.HOST].address
        client = RemoteClient(endpoints_of(caldb_twin.max_web_interface(address)),
                              timeout_s=10)
        assert client.ping().startswith(caldb_twin.MAX_WEB_PREFIX)
    finally:
        heal(full, "SPB")


def test_12_2_a_request_storm_is_found_with_its_job(full: Twin) -> None:
    apply_fault(full, parse_fault({"kind": "caldb_request_storm"}), "SPB")
    try:
        poll("the same request logged 60 times", lambda: _log(full).read_text().count(
            "Got calibration: Offset (") >= 60, 90, interval=1)
        found = diagnose("caldb-remote-errors")
        assert [f["id"] for f in found.findings] == ["request-storm"], found.report
        assert "legacy_correct_constants_SPB" in json.dumps(found.report)
    finally:
        heal(full, "SPB")
    assert diagnose("caldb-remote-errors", "SPB", "repeat_max=100000").findings == []


def test_7_faulty_constants_are_found_by_their_data_and_heal_disables_them(full: Twin) -> None:
    prefix = instrument_layout("SPB").instrument.physical_prefix
    apply_fault(full, parse_fault({"kind": "faulty_constants", "module": MODULE}), "SPB")
    try:
        found = diagnose("faulty-constants", "SPB", f"physical_device={prefix}{MODULE:02d}")
        assert [f["id"] for f in found.findings] == ["faulty-constants"], found.report
        assert found.finding("faulty-constants")["subject"] == f"{prefix}{MODULE:02d}"
        assert "flat" in json.dumps(found.report)
        assert diagnose("faulty-constants", "SPB",
                        f"physical_device={prefix}{MODULE - 1:02d}").findings == []
    finally:
        heal(full, "SPB")
    assert diagnose("faulty-constants", "SPB",
                    f"physical_device={prefix}{MODULE:02d}").findings == []


@pytest.mark.parametrize("fault", [None, "caldb_request_storm"])
def test_12_dry_runs_of_the_offline_trees_change_nothing(full: Twin, fault: str | None) -> None:
    """Issue 12's dry-run test (tests/twin/test_dry_run_twin.py) for the trees that the
    session twins cannot walk: `plan --probe` and `diagnose` of each, on this twin healthy
    and with a request storm at the access points, leave its mutation log as it was."""
    walks = [(mode, rid) for rid in sorted(NOT_ON_TWIN) for mode in ("plan", "diagnose")]
    if fault:
        apply_fault(full, parse_fault({"kind": fault}), "SPB")
    try:
        before = len(mutations.read(full))
        results = walk_all(walks)
        assert mutations.read(full)[before:] == []
    finally:
        if fault:
            heal(full, "SPB")
    assert crashed(results) == []
    assert refused(results) == []
    assert len(results) == 2 * len(NOT_ON_TWIN)
    # each walk reached the twin: a definite answer from a check, and none unknown
    answered = {r["walk"] for r in results
                if any(s.outcome in ("ok", "fail") for s in r["report"].steps)}
    assert answered == {r["walk"] for r in results}
    assert [(r["walk"], u.id) for r in results for u in r["report"].unknowns] == []
