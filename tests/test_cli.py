"""The CLI through typer's runner: exit codes 0/1/2/3 and the JSON shape."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine.cli import EXIT_FINDINGS, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE, app

runner = CliRunner()

UNKNOWN_ONLY = """\
id: unsure
title: Only unknowns
kind: diagnosis
source: "10.1"
params:
  instrument: {type: instrument}
start: probe
steps:
  probe:
    source: "10.1"
    check: local.command
    with: {argv: [/nonexistent/tool]}
    on: {ok: end, fail: end, unknown: end}
"""


def invoke(*args: str, input: str | None = None):
    return runner.invoke(app, list(args), input=input, catch_exceptions=False)


def test_diagnose_json_nothing_found(tmp_path):
    marker = tmp_path / "marker"
    marker.write_text("data")
    result = invoke("diagnose", "local-disk", "--site", "local", "--instrument", "LAB",
                    "-p", f"marker={marker}", "-p", f"folder={tmp_path}", "--format", "json")
    assert result.exit_code == EXIT_OK, result.output
    data = json.loads(result.output)
    assert data["runbook"] == "local-disk" and data["instrument"] == "LAB"
    assert data["findings"] == [] and data["unknowns"] == []


def test_diagnose_json_finding_shape(tmp_path):
    result = invoke("diagnose", "local-disk", "--site", "local", "-i", "lab",
                    "-p", f"marker={tmp_path / 'absent'}", "-p", f"folder={tmp_path}", "-f", "json")
    assert result.exit_code == EXIT_FINDINGS, result.output
    data = json.loads(result.output)
    [finding] = data["findings"]
    assert {"id", "title", "source", "subject", "evidence"} <= set(finding)
    assert finding["id"] == "stale-marker" and finding["source"] == "10.1"
    assert finding["subject"] == str(tmp_path / "absent")
    assert "no such file" in finding["evidence"][0]["evidence"]


def test_unknowns_only_exit_2(write_runbook):
    path = write_runbook("unsure.yaml", UNKNOWN_ONLY)
    result = invoke("diagnose", "unsure", "--site", "local", "-i", "LAB",
                    "--runbooks", str(path.parent), "-f", "json")
    assert result.exit_code == EXIT_UNKNOWN, result.output
    [unknown] = json.loads(result.output)["unknowns"]
    assert unknown["id"] == "probe" and "command not found" in unknown["reason"]


@pytest.mark.parametrize("args", [
    pytest.param(["diagnose", "no-such-runbook", "--site", "local", "-i", "LAB"], id="runbook"),
    pytest.param(["diagnose", "local-disk", "--site", "nowhere", "-i", "LAB"], id="site"),
    pytest.param(["diagnose", "local-disk", "--site", "local", "-i", "XYZ"], id="instrument"),
    pytest.param(["diagnose", "local-disk", "--site", "local"], id="no-instrument"),
    pytest.param(["diagnose", "local-restart", "--site", "local", "-i", "LAB"], id="procedure"),
    pytest.param(["diagnose", "no-online-data", "--site", "local", "-i", "LAB"], id="draft"),
    pytest.param(["diagnose", "local-disk", "--bogus"], id="bad-option"),
    pytest.param(["run"], id="nothing-to-run"),
])
def test_usage_errors_exit_3_without_traceback(args):
    result = invoke(*args)
    assert result.exit_code == EXIT_USAGE, result.output
    assert "Traceback" not in result.output


def test_validate_reports_positions_and_exits_3(write_runbook):
    path = write_runbook("bad.yaml", UNKNOWN_ONLY.replace("check: local.command",
                                                         "check: local.comand"))
    result = invoke("validate", str(path.parent))
    assert result.exit_code == EXIT_USAGE
    assert f"{path}:11:5: unknown check 'local.comand' (did you mean 'local.command'?)" \
        in result.output


def test_validate_shipped_runbooks_is_clean():
    result = invoke("validate")
    assert result.exit_code == 0, result.output
    assert "runbook(s) valid" in result.output


def test_plan_saves_a_file_that_run_accepts(tmp_path):
    plan = tmp_path / "plan.json"
    state = tmp_path / "service"
    result = invoke("plan", "local-restart", "--site", "local", "-i", "LAB",
                    "-p", f"state_file={state}", "-o", str(plan))
    assert result.exit_code == 0, result.output
    assert not state.exists()
    doc = json.loads(plan.read_text())
    assert doc["runbook"] == "local-restart" and len(doc["hash"]) == 64
    result = invoke("run", "--plan", str(plan), "--yes", input="y\n")
    assert result.exit_code == 0, result.output
    assert state.read_text().strip() == "ACTIVE"


def test_run_refuses_a_tampered_plan(tmp_path):
    plan = tmp_path / "plan.json"
    invoke("plan", "local-restart", "--site", "local", "-i", "LAB",
           "-p", f"state_file={tmp_path / 's'}", "-o", str(plan))
    doc = json.loads(plan.read_text())
    doc["fingerprints"]["inventory"] = "0" * 64
    doc["hash"] = "tampered"
    plan.write_text(json.dumps(doc))
    result = invoke("run", "--plan", str(plan), "--yes")
    assert result.exit_code == EXIT_USAGE
    assert "edited" in result.output
    assert not (tmp_path / "s").exists()


def test_run_without_an_answer_declines(tmp_path):
    result = invoke("run", "local-restart", "--site", "local", "-i", "LAB",
                    "-p", f"state_file={tmp_path / 's'}", input="")
    assert result.exit_code == EXIT_FINDINGS
    assert "stopped at manual step 'before'" in result.output
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("fmt,needle", [("dot", "digraph"), ("mermaid", "flowchart TD")])
def test_graph_exports(fmt, needle):
    result = invoke("graph", "restart-online", "--format", fmt)
    assert result.exit_code == 0 and needle in result.output
    assert "restart-servers" in result.output


def test_schema_is_json_schema():
    data = json.loads(invoke("schema").output)
    assert data["title"] == "Runbook" and "steps" in data["properties"]


def test_list_show_and_inventory():
    assert "restart-online" in invoke("list").output
    shown = invoke("show", "local-restart")
    assert shown.exit_code == 0 and "wait-active" in shown.output
    inv = invoke("inventory", "--site", "local", "-i", "LAB")
    assert inv.exit_code == 0 and "cal_restart" in inv.output


def test_markdown_output(tmp_path):
    result = invoke("diagnose", "local-disk", "--site", "local", "-i", "LAB",
                    "-p", f"marker={tmp_path / 'absent'}", "-p", f"folder={tmp_path}",
                    "-f", "markdown")
    assert result.exit_code == EXIT_FINDINGS
    assert result.output.startswith("# Local example - is data being written to a folder?")
    assert "## Findings" in result.output


def test_coverage_reports_items_and_exit_status():
    result = invoke("coverage", "--sections", "10.2", "--format", "json")
    data = json.loads(result.output)
    ids = {item["id"]: item for item in data["items"]}
    assert ids["10.2#1"]["covered_by"] == ["no-online-data:daq-state",
                                           "no-online-data:daq-not-monitoring"]
    assert result.exit_code == (EXIT_OK if data["ok"] else EXIT_FINDINGS)
