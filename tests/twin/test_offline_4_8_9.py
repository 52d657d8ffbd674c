"""Guidelines 4 (offline calibration status, restarts), 8.1 (a dark request's trail) and 9
(the overview page) against the twin's webservice stand-in, on a hosts-only twin."""

from __future__ import annotations

import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sim import offline
from sim.faults import apply_fault, heal
from sim.scenario import parse_fault
from sim.twin import Twin
from tests.twin._kit import dark_request, diagnose, own_twin, poll
from tests.twin.test_twin_ssh import connect

pytestmark = pytest.mark.twin

HOST = "max-exfl016"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - root - (INFO|ERROR) - (.*)$")


@pytest.fixture(scope="module")
def hosts_twin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Twin]:
    yield from own_twin(tmp_path_factory.mktemp("offline"), karabo=False)


def _run_dir(twin: Twin) -> Path:
    return twin.hosts[HOST].home("xcal") / "calibration_webservice_run"




def test_4_2_1_webservice_and_overview_run_as_xcal_with_the_guidelines_command_lines(
        hosts_twin: Twin) -> None:
    with connect(hosts_twin, HOST, "xcal") as conn:
        out = conn.run("ps aux | grep webservice", hide=True).stdout
    venv = "/home/xcal/calibration_webservice_venv/bin/python"
    code = "/home/xcal/calibration_webservice/webservice"
    ours = [line for line in out.splitlines() if "grep" not in line]
    assert any(line.startswith("xcal ") and line.endswith(
        f"{venv} {code}/webservice.py --mode prod --logging INFO --config-file "
        f"{code}/webservice.yaml") for line in ours), out
    assert any(line.startswith("xcal ") and line.endswith(
        f"{venv} {code}/serve_overview.py --config {code}/serve_overview.yaml")
        for line in ours), out


def test_4_2_2_a_dark_request_logs_three_lines_and_submits_a_job_8_1(hosts_twin: Twin) -> None:
    (hosts_twin.dir / "gpfs/exfel/exp/SPB/202031/p900201/raw/r0012").mkdir(parents=True)
    reply = dark_request(hosts_twin, proposal=900201, run=12)
    assert reply["status"] == "SUCCESS", reply
    lines = [LINE.match(x) for x in (_run_dir(hosts_twin) / "web.log").read_text().splitlines()]
    messages = [m.group(2) for m in lines if m]
    assert messages[-3] == ("Dark characterization for SPB_DET_AGIPD1M-1 at SPB is requested, "
                            "Checking files...")
    assert messages[-2].startswith("python -m detectors.dark --instrument SPB")
    assert messages[-1] == "SUCCESS: Started dark characterization: proposal 900201, run 12"
    job = reply["job_id"]
    with connect(hosts_twin, HOST, "xcal") as conn:
        queue = conn.run('squeue -t all -u xcal -o "%.18i %60j %.3t %.10M %R"', hide=True).stdout
    assert re.search(rf"^\s*{job}\s+dark_SPB_AGIPD_p900201_r12\s", queue, re.M), queue
    temp = _run_dir(hosts_twin) / "webservice" / "temp" / Path(reply["temp"]).name
    assert temp.name.startswith("slurm_out_AGIPD_DARK_t")
    assert "proposal: 900201" in (temp / "inputParameters.rst").read_text()
    # 8.1: the job is real; what it printed stays in temp when it did not succeed.
    out = poll(f"slurm-{job}.out with the job's exit", lambda: temp.is_dir() and (
        temp / f"slurm-{job}.out").exists() and "finished with exit status" in (
        temp / f"slurm-{job}.out").read_text() and temp / f"slurm-{job}.out", 60)
    assert "as xcal" in out.read_text()


def test_4_2_2_a_request_without_raw_data_is_an_error_line(hosts_twin: Twin) -> None:
    reply = dark_request(hosts_twin, proposal=900201, run=99)
    assert reply["status"] == "FAILED"
    last = (_run_dir(hosts_twin) / "web.log").read_text().splitlines()[-1]
    assert " - root - ERROR - " in last and "proposal 900201, run 99" in last


def test_9_overview_page_shows_the_four_panels(hosts_twin: Twin) -> None:
    address = hosts_twin.hosts[HOST].address
    with urllib.request.urlopen(f"http://{address}:8008/", timeout=10) as answer:
        page = answer.read().decode()
    for panel in ("Maxwell status", "Running calibration jobs", "Last characterization runs",
                  "Webservice log"):
        assert f"<h2>{panel}</h2>" in page
    assert "PARTITION" in page and "JOBID" in page and "Dark characterization for" in page


def test_4_2_health_webservice_passes_on_a_healthy_twin(hosts_twin: Twin) -> None:
    d = diagnose("health-webservice")
    assert d.code == 0 and d.findings == [], d.report


@pytest.mark.parametrize(("kind", "finding", "program"), [
    pytest.param("webservice_dead", "webservice-dead", "webservice", id="webservice-dead"),
    pytest.param("overview_down", "overview-down", "overview", id="overview-down"),
])
def test_4_2_offline_status_finds_the_fault_and_heal_restores(
        hosts_twin: Twin, kind: str, finding: str, program: str) -> None:
    apply_fault(hosts_twin, parse_fault({"kind": kind}), "SPB")
    assert offline.find(hosts_twin.dir, program) == []
    found = diagnose("offline-status").finding(finding)
    assert found["subject"] and HOST in found["subject"]
    heal(hosts_twin, "SPB")
    assert offline.find(hosts_twin.dir, program)
    after = diagnose("offline-status")
    assert finding not in [f["id"] for f in after.findings]


def test_4_4_plan_restart_overview_resolves(hosts_twin: Twin) -> None:
    res = subprocess.run([str(Path(sys.executable).parent / "runbook"), "plan",
                          "restart-overview", "--site", "sim", "-i", "SPB"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "ssh.run" in res.stdout and "DANGER" in res.stdout


def test_4_3_restart_webservice_kills_restarts_verifies_and_notifies(hosts_twin: Twin) -> None:
    """4.3 as `runbook run restart-webservice`: a new process as xcal with the guidelines'
    command line, and the notice of step 4 to every instrument, det-support in copy."""
    from sim import mailbox

    before = offline.find(hosts_twin.dir, "webservice")
    assert len(before) == 1
    mails = len(mailbox.messages(hosts_twin.mail_dir))
    res = subprocess.run(
        [str(Path(sys.executable).parent / "runbook"), "run", "restart-webservice",
         "--site", "sim", "-i", "SPB", "--yes", "-p", "reason=a hung request queue",
         "-p", "down_since=2026-12-06 22:40", "-f", "json"],
        input="y\n", capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = poll("the restarted webservice", lambda: offline.find(hosts_twin.dir,
                                                                    "webservice"))
    assert after != before and len(after) == 1
    with connect(hosts_twin, HOST, "xcal") as conn:
        ps = conn.run(f"ps -o user=,args= -p {after[0]}", hide=True).stdout.strip()
    assert ps.startswith("xcal ") and ps.endswith("--mode prod --logging INFO --config-file "
                                                  "/home/xcal/calibration_webservice/"
                                                  "webservice/webservice.yaml")
    [notice] = mailbox.wait_for_messages(hosts_twin.mail_dir, mails + 1, timeout=10)[mails:]
    assert notice.subject == "Restart of Calibration Webservice"
    assert {"spb-instrument@xfel.eu", "mid-instrument@xfel.eu", "hed-instrument@xfel.eu",
            "det-support@xfel.eu"} <= set(notice.rcpt_tos)
    text = notice.part("plain")
    assert "due to a hung request queue" in text and "from 2026-12-06 22:40 to " in text
    assert "resubmitting" in text and "det-support@xfel.eu" in text
