"""The status dashboard (section 9, "Webservice Overview") over a state file in tmp_path."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest
from starlette.testclient import TestClient

from engine.result import Finding, Report, Unknown
from engine.web import create_app
from tests.web._kit import FAULT_CHECK, add_fault


def no_session():
    from engine.errors import RunbookError
    raise RunbookError("unknown site 'nowhere'")


def stored_report(store, **kw) -> str:
    report = Report(runbook="no-online-data", mode="diagnose", instrument="LAB", site="local",
                    findings=[Finding(id="daq-not-monitoring", source="10.2",
                                      title="The DAQ is in neither MONITOR nor RECORD state",
                                      subject="LAB_DAQ/DM/RUN_CONTROLLER",
                                      remedy="Put the DAQ into MONITOR.")],
                    unknowns=[Unknown(id="gui", subject="localhost", reason="no route")], **kw)
    return store.add_run(report, time.time() - 3, time.time(), user="oncall")


def test_9_overview_shows_health_findings_slurm_runs_and_audit(store, lab_session):
    add_fault(store)
    run_id = stored_report(store)
    store.add_audit(site="local", instrument="LAB", run_id=run_id, step="start-pipeline",
                    what="karabo.call start", outcome="confirmed", confirmation="confirmed")
    page = TestClient(create_app(store, lab_session)).get("/")
    assert page.status_code == 200
    html = page.text
    assert 'id="health-LAB"' in html and "Last check" in html and "UTC" in html
    assert "The DAQ is in neither MONITOR nor RECORD state" in html
    assert "LAB_DAQ/DM/RUN_CONTROLLER" in html and "(section 10.2)" in html
    assert "no source configured" in html
    assert f'href="/runs/{run_id}"' in html
    assert "karabo.call start" in html
    assert "no report folder configured" in html
    assert '<option value="lab-marker">' in html
    assert '<option value="restart-online">' not in html  # a procedure
    assert "script-src" not in page.headers["content-security-policy"]


def test_9_instrument_without_health_history_says_so(store, lab_session):
    html = TestClient(create_app(store, lab_session)).get("/").text
    assert "No health check recorded for this instrument yet." in html


def test_9_page_works_when_the_site_cannot_load(store):
    add_fault(store, instrument="SPB", site="xfel")
    page = TestClient(create_app(store, no_session)).get("/")
    assert page.status_code == 200
    assert "unknown site &#39;nowhere&#39;" in page.text
    assert "The DAQ is in neither MONITOR nor RECORD state" in page.text
    assert "Diagnose now" not in page.text


def test_everything_from_the_store_is_escaped(store, lab_session):
    check = {**FAULT_CHECK, "findings": [{**FAULT_CHECK["findings"][0],
                                          "title": "<script>alert(1)</script>"}]}
    add_fault(store, checks=[check])
    html = TestClient(create_app(store, lab_session)).get("/").text
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_health_rows_with_missing_fields_still_render(store, lab_session):
    add_fault(store, checks=[{"check": "gpu", "status": "weird", "findings": [{"title": "t"}]}])
    page = TestClient(create_app(store, lab_session)).get("/")
    assert page.status_code == 200 and "gpu" in page.text


def test_run_page_shows_the_stored_report(store, lab_session):
    run_id = stored_report(store)
    page = TestClient(create_app(store, lab_session)).get(f"/runs/{run_id}")
    assert page.status_code == 200 and page.text.lstrip().lower().startswith("<!doctype html")
    assert "The DAQ is in neither MONITOR nor RECORD state" in page.text
    assert "Put the DAQ into MONITOR." in page.text and "no route" in page.text
    assert "Detector support status" in page.text  # the way back


def test_unknown_run_is_404(store, lab_session):
    assert TestClient(create_app(store, lab_session)).get("/runs/nope").status_code == 404


def test_slurm_panel_shows_the_sources_jobs(store, lab_session):
    jobs = [{"job_id": "101", "name": "xfel-calibrate", "state": "R", "elapsed": "27:58"},
            {"job_id": "102", "name": "xfel-calibrate", "state": "PD", "reason": "Priority"}]
    html = TestClient(create_app(store, lab_session, slurm=lambda: jobs)).get("/").text
    assert "1 running, 1 pending." in html and "Priority" in html


def test_a_failing_slurm_source_is_shown_on_its_panel(store, lab_session):
    def broken():
        raise OSError("squeue: command not found")
    page = TestClient(create_app(store, lab_session, slurm=broken)).get("/")
    assert page.status_code == 200 and "squeue: command not found" in page.text


def dark_folder(root: Path, name: str, index: bool = True) -> Path:
    folder = root / "SPB" / "SPB_DET_AGIPD1M-1" / "dark" / name
    folder.mkdir(parents=True)
    if index:
        (folder / "index.html").write_text('<html><body><img src="offset.png">Dark report'
                                           "</body></html>")
        (folder / "offset.png").write_bytes(b"\x89PNG\r\n")
    return folder


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    dark_folder(root, "dark_900146_r67_r68_r69_200723_120510")
    dark_folder(root, "dark_900146_r70_r71_r72_210101_090000")
    dark_folder(root, "dark_900146_r1_r2_r3_190101_090000", index=False)
    (tmp_path / "secret.txt").write_text("root:x:0:0")
    (root / "SPB" / "escape").symlink_to(tmp_path / "secret.txt")
    return root


def test_9_3_last_characterization_runs_newest_first(store, lab_session, reports):
    app = create_app(store, lab_session, reports=reports, reports_limit=2)
    html = TestClient(app).get("/").text
    newest, older = "dark_900146_r70_r71_r72_210101_090000", "dark_900146_r67_r68_r69_200723"
    assert html.index(newest) < html.index(older)
    assert "r1, r2, r3" not in html  # beyond the limit
    assert f'href="/reports/SPB/SPB_DET_AGIPD1M-1/dark/{newest}/"' in html


def test_report_folders_are_served_read_only(store, lab_session, reports):
    client = TestClient(create_app(store, lab_session, reports=reports))
    base = "/reports/SPB/SPB_DET_AGIPD1M-1/dark/dark_900146_r67_r68_r69_200723_120510"
    assert client.get(base, follow_redirects=False).status_code == 307
    page = client.get(base + "/")
    assert "Dark report" in page.text and page.headers["content-security-policy"] == "sandbox"
    assert client.get(base + "/offset.png").content.startswith(b"\x89PNG")
    listing = client.get("/reports/SPB/SPB_DET_AGIPD1M-1/dark/dark_900146_r1_r2_r3_190101_090000/")
    assert listing.status_code == 200 and "empty" in listing.text
    assert client.put(base + "/offset.png").status_code == 405


@pytest.mark.parametrize("path", [
    pytest.param("/reports/../../etc/passwd", id="dot-dot"),
    pytest.param("/reports/%2e%2e/%2e%2e/etc/passwd", id="encoded-dot-dot"),
    pytest.param("/reports/SPB/..%2f..%2f..%2fsecret.txt", id="encoded-slash"),
    pytest.param("/reports//etc/passwd", id="absolute"),
    pytest.param("/reports/SPB/escape", id="symlink-out"),
])
def test_paths_outside_the_report_folder_are_refused(store, lab_session, reports, path):
    page = TestClient(create_app(store, lab_session, reports=reports)).get(path)
    assert page.status_code == 404 and "root:" not in page.text


def test_a_dot_dot_path_that_no_client_normalized_is_refused(store, lab_session, reports):
    """httpx and browsers drop `..` before sending; a raw request keeps it."""
    app = create_app(store, lab_session, reports=reports)
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    path = "/reports/../../secret.txt"
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": b"", "headers": [(b"host", b"testserver")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    anyio.run(app, scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert sent[0]["status"] == 404 and b"root:" not in body


@pytest.mark.parametrize("form,status", [
    pytest.param({"instrument": "LAB", "runbook": "restart-online"}, 400, id="procedure"),
    pytest.param({"instrument": "LAB", "runbook": "no-such-runbook"}, 400, id="unknown"),
    pytest.param({"instrument": "XYZ", "runbook": "lab-marker"}, 400, id="instrument"),
    pytest.param({"instrument": "LAB"}, 400, id="no-runbook"),
])
def test_diagnose_accepts_only_diagnoses(store, lab_session, form, status):
    client = TestClient(create_app(store, lab_session))
    assert client.post("/diagnose", data=form).status_code == status
    assert store.runs() == []


def test_diagnose_from_another_site_is_refused(store, lab_session):
    client = TestClient(create_app(store, lab_session))
    page = client.post("/diagnose", data={"instrument": "LAB", "runbook": "lab-marker"},
                       headers={"origin": "http://evil.example"})
    assert page.status_code == 403 and store.runs() == []


def test_no_route_but_diagnose_changes_anything(store, lab_session):
    client = TestClient(create_app(store, lab_session))
    assert client.post("/").status_code == 405
    assert client.get("/diagnose").status_code == 405
    assert client.post("/runs/x").status_code == 405


def test_diagnose_now_runs_the_diagnosis_and_shows_its_report(store, lab_session, tmp_path):
    client = TestClient(create_app(store, lab_session))
    posted = client.post("/diagnose", data={"instrument": "lab", "runbook": "lab-marker"},
                         headers={"origin": "http://testserver"}, follow_redirects=False)
    assert posted.status_code == 303
    run_id = posted.headers["location"].rsplit("/", 1)[1]
    assert [(r["id"], r["runbook"], r["instrument"]) for r in store.runs()] == \
        [(run_id, "lab-marker", "LAB")]
    page = client.get(posted.headers["location"])
    assert f"No marker file at {tmp_path / 'marker'}" in page.text


def test_serve_binds_loopback_and_serves_the_state_folder(monkeypatch, tmp_path, lab_runbooks):
    import uvicorn

    from engine.store import Store
    from engine.web import serve
    Store.open(tmp_path / "runbook.sqlite").add_audit(
        site="local", instrument="LAB", run_id=None, step="s", what="from the state folder",
        outcome="done")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(app=app, **kw))
    serve(site="local", state=tmp_path, runbooks=[lab_runbooks])
    assert (served["host"], served["port"]) == ("127.0.0.1", 8090)
    html = TestClient(served["app"]).get("/").text
    assert "from the state folder" in html and '<option value="lab-marker">' in html


def test_serve_stops_on_a_missing_report_folder(tmp_path):
    from engine.errors import RunbookError
    from engine.web import serve
    with pytest.raises(RunbookError, match="no such folder"):
        serve(reports=tmp_path / "missing", state=tmp_path)
