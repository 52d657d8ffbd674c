"""The offline fault kinds of sections 4.2.3, 8.1, 8.2, 9 and 12.2, each injected as a cause
on a hosts-only twin with the webservice, diagnosed with the runbook that the guidelines'
section names (the finding and its subject: the request, or the overview page), then
healed.  Section 5's request through the overview page, and its plan, are here too.

Every request uses runs of its own (tiny AGIPD darks, one module), so that the trail of one
test's request is never another's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest

from sim import offline
from sim.faults import apply_fault, heal
from sim.rawdata import write_raw_run
from sim.scenario import parse_fault
from sim.twin import Twin
from tests.twin._kit import Diagnosis, dark_request, diagnose, poll
from tests.twin.test_offline_4_8_9 import hosts_twin as _hosts_twin

hosts_twin = _hosts_twin  # the fixture, here for this module's own twin (scope: module)

pytestmark = pytest.mark.twin

HOST = offline.HOST
KARABO_ID = "SPB_DET_AGIPD1M-1"
JOB_S = 240.0  # a request's job: numba compiles the kernels in xcal's cache the first time
_PROPOSALS = count(900301)


@pytest.fixture(scope="module")
def twin(request: pytest.FixtureRequest) -> Twin:
    """This module's own hosts-only twin with the webservice (test_offline_4_8_9's fixture),
    with the SPB AGIPD declared in the DB that xcal's dark jobs inject into."""
    started: Twin = request.getfixturevalue("hosts_twin")
    _seed_xcal_caldb(started)
    return started


@pytest.fixture(autouse=True)
def healed(twin: Twin) -> Iterator[None]:
    """Each test leaves no cause behind, even when it fails half way."""
    yield
    heal(twin, "SPB")


def _seed_xcal_caldb(twin: Twin) -> None:
    """The facility's DB knows its detectors: declare the SPB AGIPD in the DB that xcal's
    jobs use (the default one in xcal's home)."""
    from caldb.store import CalDB
    from detectors import get_detector_type
    from detectors.dark.seed import dark_seed
    from sim import slurm

    share = twin.hosts[HOST].home("xcal") / ".local" / "share" / "runbook"
    share.mkdir(parents=True, exist_ok=True)
    spec = dark_seed(get_detector_type("AGIPD"), KARABO_ID, range(16),
                     datetime(2019, 1, 1, tzinfo=UTC))
    with CalDB.open(f"sqlite:///{share / 'caldb.sqlite'}", share / "caldb_store") as db:
        db.seed(json.loads(json.dumps(spec, default=str)))
    uid = slurm.ensure_user()
    for path in [share.parent.parent, share.parent, *share.parent.rglob("*")]:
        os.chown(path, uid, uid)


def _dark_runs(twin: Twin) -> tuple[int, str]:
    """A new proposal with three tiny AGIPD darks (high, medium, low gain): (proposal, runs)."""
    proposal = next(_PROPOSALS)
    for gain, run in enumerate((1, 2, 3)):
        write_raw_run(twin.dir, "SPB", "202031", proposal, run, "AGIPD", KARABO_ID,
                      modules=[0], trains=4, cells=2, gain_stage=gain)
    return proposal, "1,2,3"


def _request_runs(twin: Twin, proposal: int, runs: str) -> dict:
    return dark_request(twin, proposal=proposal, runs=[int(r) for r in runs.split(",")])


def _on_twin(twin: Twin, path: str) -> Path:
    """A path on max-exfl016 (/home, /gpfs) as this machine sees it."""
    if path.startswith("/gpfs/"):
        return twin.dir / path.lstrip("/")
    return twin.hosts[HOST].root / path.lstrip("/")


def _finished(twin: Twin, reply: dict) -> str:
    """Wait until the request's job has left the queue; its output (kept in temp when it
    failed, copied into the report when it succeeded)."""
    assert reply["status"] == "SUCCESS", reply
    job = reply["job_id"]
    poll(f"the job {job} of {reply['name']} to leave the queue",
         lambda: job not in _squeue(twin, "-o", "%i").split(), JOB_S)
    name = f"slurm-{job}.out"
    for out in (_on_twin(twin, reply["temp"]) / name, _on_twin(twin, reply["report"]) / name):
        if out.exists():
            return out.read_text(errors="replace")
    raise AssertionError(f"{name} is neither in {reply['temp']} nor in {reply['report']}")


def _dark_job(twin: Twin, proposal: int | None = None,
              runs: str = "1,2,3") -> tuple[int, str, dict, str]:
    """Request new darks (or these again), wait for the job: (proposal, runs, reply, output)."""
    if proposal is None:
        proposal, runs = _dark_runs(twin)
    reply = _request_runs(twin, proposal, runs)
    return proposal, runs, reply, _finished(twin, reply)


def _subject(proposal: int, runs: str) -> str:
    return f"{KARABO_ID} p{proposal} r{runs}"


def _trail(tree: str, proposal: int, runs: str) -> Diagnosis:
    return diagnose(tree, "SPB", f"detector={KARABO_ID}", f"proposal={proposal}",
                    f"runs={runs}")


def _ids(d: Diagnosis) -> list[str]:
    return [f["id"] for f in d.findings]


def _inject(twin: Twin, **fault: object) -> None:
    apply_fault(twin, parse_fault(fault), "SPB")


def _found(d: Diagnosis, finding_id: str) -> dict:
    """The finding as the report gives it (subject, severity, evidence of its checks)."""
    d.finding(finding_id)  # fails the test showing every finding when it is absent
    return next(f for f in d.report["findings"] if f["id"] == finding_id)


def _evidence(finding: dict) -> str:
    return "\n".join(str(e.get("evidence") or "") for e in finding["evidence"])


def _squeue(twin: Twin, *argv: str) -> str:
    from sim import slurm

    assert twin.slurm_conf is not None
    return slurm.client(twin.slurm_conf, ["squeue", "-h", *argv]).stdout


# ---- 5: requesting a dark characterization ---------------------------------------------

def test_5_plan_request_dark_resolves(twin: Twin) -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "runbook"), "plan", "request-dark",
                          "--site", "sim", "-i", "SPB", "-p", f"detector={KARABO_ID}",
                          "-p", "proposal=900201", "-p", "runs=12,13,14", "-f", "json"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    steps = {(s["branch"], s["id"]): s for s in json.loads(res.stdout)["steps"]}
    request = steps[("request-dark", "request")]["resolved"]["with"]
    assert request["host"] == HOST and request["user"] == "xcal"
    assert request["argv"][-5:] == ["8008", "SPB", KARABO_ID, "900201", "12,13,14"]
    assert "/request_dark" in request["argv"][2]
    # both ways of section 5, and the 8.1 trail when no report comes
    assert ("request-dark/dark-characterization", "characterize") in steps
    assert ("request-dark/no-report", "output") in steps


def test_5_runbook_run_request_dark_ends_with_the_report(twin: Twin) -> None:
    """Section 5 as `runbook run request-dark`: the page takes the request, the webservice
    launches the job, the walk waits for it and finds the report where section 8 says."""
    proposal, runs = _dark_runs(twin)
    res = subprocess.run([str(Path(sys.executable).parent / "runbook"), "run", "request-dark",
                          "--site", "sim", "-i", "SPB", "--yes", "-p", f"detector={KARABO_ID}",
                          "-p", f"proposal={proposal}", "-p", f"runs={runs}", "-f", "json"],
                         capture_output=True, text=True, timeout=JOB_S + 60)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    steps = {s["id"]: s for s in json.loads(res.stdout)["steps"]}
    assert steps["request"]["outcome"] == "done" and steps["launched"]["outcome"] == "ok"
    assert steps["report"]["outcome"] == "ok", steps["report"]
    assert f"dark_{proposal:06d}_r1_r2_r3_" in steps["report"]["evidence"]
    log = (twin.hosts[HOST].home("xcal") / "calibration_webservice_run" / "web.log").read_text()
    assert (f"SUCCESS: Started dark characterization: proposal {proposal}, run {runs}\n"
            in log)
    assert f" dark_SPB_AGIPD_p{proposal}_r1_2_3 " not in _squeue(twin, "-o", " %j ")


# ---- 8.1: no report ---------------------------------------------------------------------

def test_8_1_maxwell_busy_keeps_the_job_pending(twin: Twin) -> None:
    _inject(twin, kind="maxwell_busy")
    proposal, runs = _dark_runs(twin)
    reply = _request_runs(twin, proposal, runs)
    assert reply["status"] == "SUCCESS", reply
    found = _found(_trail("no-report", proposal, runs), "job-pending")
    assert found["subject"] == _subject(proposal, runs)
    assert "(Resources)" in _evidence(found)
    busy = _found(diagnose("overview-checks"), "maxwell-busy")
    assert HOST in busy["subject"]
    heal(twin, "SPB")
    poll("the pending job to leave PD", lambda: reply["job_id"] not in _squeue(
        twin, "-t", "PD", "-o", "%i").split(), 60)
    assert "job-pending" not in _ids(_trail("no-report", proposal, runs))
    assert "maxwell-busy" not in _ids(diagnose("overview-checks"))
    _finished(twin, reply)


def test_8_1_job_never_launched_is_an_error_in_web_log(twin: Twin) -> None:
    _inject(twin, kind="job_never_launched")
    proposal, runs = _dark_runs(twin)
    reply = _request_runs(twin, proposal, runs)
    assert reply["status"] == "FAILED" and "partition" in reply["message"], reply
    found = _found(_trail("no-report", proposal, runs), "never-launched")
    assert found["subject"] == _subject(proposal, runs)
    assert "sbatch failed" in _evidence(found)
    heal(twin, "SPB")
    again = _request_runs(twin, proposal, runs)  # resubmitted, as the remedy says
    assert again["status"] == "SUCCESS", again
    assert "never-launched" not in _ids(_trail("no-report", proposal, runs))
    _finished(twin, again)


def test_8_1_wrong_input_parameter_fails_the_job_before_injection(twin: Twin) -> None:
    _inject(twin, kind="wrong_input_parameter")
    proposal, runs, _reply, out = _dark_job(twin)
    assert "sensor_bias_voltage must be a finite number, not 'None'" in out, out[-2000:]
    found = _found(_trail("no-report", proposal, runs), "constants-not-injected")
    assert found["subject"] == _subject(proposal, runs)
    assert "- condition: sensor_bias_voltage=None" in _evidence(found)
    heal(twin, "SPB")
    _dark_job(twin, proposal, runs)  # requested again with the configuration corrected
    assert _ids(_trail("no-report", proposal, runs)) == ["report-present"]


def test_8_1_report_rendering_failed_keeps_the_temp_folder(twin: Twin) -> None:
    _inject(twin, kind="report_rendering_failed")
    proposal, runs, reply, out = _dark_job(twin)
    assert "Inject Offset constants from" in out and "latex" in out.lower(), out[-3000:]
    assert _on_twin(twin, reply["temp"]).is_dir()
    assert not _on_twin(twin, reply["report"]).exists()
    found = _found(_trail("no-report", proposal, runs), "report-rendering-failed")
    assert found["subject"] == _subject(proposal, runs)
    heal(twin, "SPB")
    _dark_job(twin, proposal, runs)
    assert _ids(_trail("no-report", proposal, runs)) == ["report-present"]


# ---- 8.2: a report with errors -----------------------------------------------------------

def test_8_2_plotting_errors_only_are_benign(twin: Twin) -> None:
    _inject(twin, kind="plotting_errors_only")
    proposal, runs, _reply, out = _dark_job(twin)
    assert "finished with exit status 0" in out, out[-3000:]
    found = _found(_trail("report-errors", proposal, runs), "plotting-errors-only")
    assert found["subject"] == _subject(proposal, runs)
    assert found["severity"] == "info"
    assert "findfont" in _evidence(found)
    heal(twin, "SPB")
    proposal, runs, _reply, _out = _dark_job(twin)
    assert _trail("report-errors", proposal, runs).findings == []


def test_12_2_version_already_taken_on_a_second_identical_request(twin: Twin) -> None:
    proposal, runs = _dark_runs(twin)
    _inject(twin, kind="version_taken", proposal=proposal,
            runs=[int(r) for r in runs.split(",")], timeout=JOB_S)
    _proposal, _runs, _reply, out = _dark_job(twin, proposal, runs)
    assert "Version already taken" in out, out[-3000:]
    found = _found(_trail("report-errors", proposal, runs), "version-taken")
    assert found["subject"] == _subject(proposal, runs)
    heal(twin, "SPB")  # the constants stay in the DB; new darks inject again
    proposal, runs, _reply, _out = _dark_job(twin)
    assert "version-taken" not in _ids(_trail("report-errors", proposal, runs))


# ---- 9 / 4.2.3: the overview page ---------------------------------------------------------

def test_9_jobs_piling_up_on_the_overview_page(twin: Twin) -> None:
    _inject(twin, kind="jobs_piling_up", jobs=8)

    def queue() -> list[str] | None:
        states = [line.split()[0] for line in _squeue(twin, "-u", "xcal", "-o", "%t %j")
                  .splitlines() if " correct_SPB_p002214_r" in line]
        return states if sorted(states) == ["PD"] * 7 + ["R"] else None

    poll("one correction job running, seven pending", queue, 60)
    found = _found(diagnose("overview-checks"), "jobs-piling-up")
    assert HOST in found["subject"]
    assert "7 pending" in _evidence(found)
    heal(twin, "SPB")
    assert "correct_" not in _squeue(twin, "-u", "xcal", "-o", "%j")
    assert "jobs-piling-up" not in _ids(diagnose("overview-checks"))
