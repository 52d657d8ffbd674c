"""Maxwell's Slurm in the twin (4.2.3): ``ssh xcal@max-exfl016``, sbatch and ``squeue -u
xcal`` reach the twin's own cluster, and the `health-slurm` runbook reads its real output.

A hosts-only twin (``karabo=False``) is enough: Slurm starts with every twin.
"""

from __future__ import annotations

import re

import fabric
import pytest
from ruamel.yaml import YAML

from sim.twin import Twin, TwinFactory
from tests.twin._kit import diagnose, poll

pytestmark = pytest.mark.twin

MAXWELL = "max-exfl016"
SQUEUE_4_2_3 = 'squeue -u xcal -o "%.18i %60j %.3t %.10M %R"'
HELD = "hostname; pwd; while [ ! -e release ]; do sleep 0.05; done"


def connect(twin: Twin) -> fabric.Connection:
    config = fabric.Config(runtime_ssh_path=str(twin.ssh_config),
                           overrides={"run": {"in_stream": False}})
    return fabric.Connection(MAXWELL, user="xcal", config=config, connect_timeout=10)




def rows(conn: fabric.Connection) -> list[list[str]]:
    header, *lines = conn.run(SQUEUE_4_2_3, hide=True).stdout.splitlines()
    assert header.split() == ["JOBID", "NAME", "ST", "TIME", "NODELIST(REASON)"]
    return [line.split() for line in lines]


def quiet(tree: str) -> list[tuple[str, str]]:
    d = diagnose(tree)
    assert d.code == 0 and not d.report.get("aborted"), d.report
    return [(s["id"], s["outcome"]) for s in d.findings + d.unknowns]


def test_squeue_on_maxwell_shows_the_xcal_job_submitted_there_4_2_3(
        twin_factory: TwinFactory) -> None:
    twin = twin_factory(["SPB"], karabo=False)
    assert quiet("health-slurm") == []  # nothing queued: squeue answers, nothing pending
    with connect(twin) as conn:
        job = conn.run(f"sbatch --parsable -J correct_SPB_900146_r67 --wrap '{HELD}'",
                       hide=True).stdout.strip()
        poll("the job to run on Maxwell", lambda: [r[2] for r in rows(conn)] == ["R"])
        assert rows(conn)[0][:2] == [job, "correct_SPB_900146_r67"]
        assert quiet("health-slurm") == []  # a running job is no pile-up
        conn.run("touch release", hide=True)
        poll("the job to finish", lambda: rows(conn) == [])
        out = conn.run(f"stat -c %U slurm-{job}.out; cat slurm-{job}.out", hide=True).stdout
    assert out.split() == ["xcal", MAXWELL, "/home/xcal"]


def assert_dashboard_panel(running: int) -> None:
    """The overview's Slurm panel (section 9.2) reads the same queue over the site's SSH."""
    from starlette.testclient import TestClient

    from engine.runs import Session
    from engine.store import Store
    from engine.web import create_app, squeue_source
    from engine.web._views import slurm_panel

    session = Session.load("sim")
    panel = slurm_panel(squeue_source(session))
    assert (panel.problem, panel.running, panel.pending) == ("", running, 1), panel
    assert {j["name"] for j in panel.jobs} == {f"dark_{i}" for i in range(running + 1)}
    assert {j["reason"] for j in panel.jobs if j["state"] == "PENDING"} == {"(Resources)"}
    app = create_app(Store.open(), lambda: session, slurm=squeue_source(session))
    page = TestClient(app).get("/").text
    assert f"dark_{running}" in page and "no source configured" not in page


def test_health_slurm_finds_jobs_pending_past_the_limit_4_2_3(
        twin_factory: TwinFactory) -> None:
    twin = twin_factory(["SPB"], karabo=False)
    cpus = int(str((twin.slurm or {})["cpus"]))
    with connect(twin) as conn:
        for i in range(cpus + 1):
            conn.run(f"sbatch -J dark_{i} --wrap '{HELD}'", hide=True)
        poll(f"{cpus} jobs running", lambda: [r[2] for r in rows(conn)].count("R") == cpus)
        assert [r[2] for r in rows(conn)].count("PD") == 1
        assert quiet("health-slurm") == []  # pending for less than the limit (60 minutes)
        assert_dashboard_panel(cpus)
        yaml = YAML(typ="safe", pure=True)
        yaml.default_flow_style = False  # as `sim up` writes it (flow style mangles URLs)
        site = yaml.load(twin.site_file)
        site["vars"]["health"] = {"pending_max_minutes": -1}  # any pending job is too old
        yaml.dump(site, twin.site_file)
        d = diagnose("health-slurm")
    assert d.finding("piling-up")["outcome"] == "finding"
    assert re.search(rf"^PENDING_TOO_LONG \d+ dark_{cpus} \d+min$",
                     d.step("pending")["observed"]["stdout"], re.M)
