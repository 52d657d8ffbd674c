"""Section 7 as the `disable-constants` procedure: faulty dark constants of one module,
found by physical device and start date, listed, disabled after confirmation, verified;
the lookup then returns the previous good set, and the printed undo restores them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from caldb.cli import app as caldb_app
from engine.cli import app

DET = "SPB_DET_AGIPD1M-1"
COND = ["-C", "Memory cells=352", "-C", "Sensor Bias Voltage=300"]
DARK = ("Offset", "Noise", "BadPixelsDark", "ThresholdsDark")
GOOD, FAULTY = "2020-01-10T00:00:00", "2020-03-05T08:00:00"


@pytest.fixture
def db(tmp_path: Path, facility: dict[str, Any], monkeypatch: pytest.MonkeyPatch):
    """A SQLite calibration DB with two quadruplets of module AGIPD00 (M304): a good one
    and, two months later, a faulty one."""
    monkeypatch.setenv("RUNBOOK_CALDB", f"sqlite:///{tmp_path / 'c.sqlite'}")
    monkeypatch.setenv("RUNBOOK_CALDB_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("USER", "det-support")
    monkeypatch.setenv("COLUMNS", "300")
    runner = CliRunner()
    seed = tmp_path / "seed.yaml"
    seed.write_text(json.dumps(facility, default=str))
    np.save(tmp_path / "c.npy", np.full((4, 4), 7.0))
    assert runner.invoke(caldb_app, ["seed", str(seed)]).exit_code == 0
    for begin in (GOOD, FAULTY):
        for name in DARK:
            got = runner.invoke(caldb_app, ["inject", "-c", name, "-d", DET, "-m", "AGIPD00",
                                            *COND, "--data", str(tmp_path / "c.npy"),
                                            "--begin-at", begin])
            assert got.exit_code == 0, got.output

    def caldb(*args: str) -> Any:
        return runner.invoke(caldb_app, list(args))
    return caldb


def _offset_begin(caldb: Any) -> str:
    found = caldb("find", "-c", "Offset", "-d", DET, "-m", "AGIPD00", *COND,
                  "--event-at", "2020-06-01T00:00:00+00:00", "--json")
    assert found.exit_code == 0, found.output
    return str(json.loads(found.stdout)[0]["begin_at"])


def _run(*params: str, answer: str = "y\n") -> Any:
    args = ["run", "disable-constants", "--site", "local", "-i", "LAB", "--yes",
            "-p", "physical_device=M304", "-p", "start_from=2020-03-01",
            "-p", "start_to=2020-03-31", "-p", "why=dark taken with beam", *params,
            "-f", "json"]
    return CliRunner().invoke(app, args, input=answer, catch_exceptions=False)


def test_7_disable_the_faulty_quadruplet_then_undo(db):
    assert _offset_begin(db) == FAULTY + "+00:00"
    result = _run()
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{"):])
    steps = {s["id"]: s for s in report["steps"]}
    assert [s["id"] for s in report["steps"]] == ["rights", "find", "sets", "disable", "verify"]
    assert steps["find"]["observed"]["sets"] == {
        "AGIPD_SIV1_AGIPDV11_M304 2020-03-05T08:00:00+00:00": [
            "BadPixelsDark", "Noise", "Offset", "ThresholdsDark"]}
    disabled = steps["disable"]["observed"]["ids"]
    assert len(disabled) == 4 and steps["verify"]["outcome"] == "ok"
    assert "undo: runbook caldb enable " + " ".join(map(str, disabled)) in \
        steps["disable"]["evidence"]
    assert _offset_begin(db) == GOOD + "+00:00"  # the previous good constants again

    audit = db("audit", str(disabled[0]))
    assert "det-support" in audit.output and "dark taken with beam" in audit.output
    assert db("enable", *map(str, disabled), "--why", "undo").exit_code == 0
    assert _offset_begin(db) == FAULTY + "+00:00"


def test_7_nothing_matches_changes_nothing(db):
    result = _run("-p", "calibrations=[\"SlopesFF\"]")
    report = json.loads(result.output[result.output.index("{"):])
    assert [f["id"] for f in report["findings"]] == ["nothing-to-disable"]
    assert "disable" not in [s["id"] for s in report["steps"]]
    assert _offset_begin(db) == FAULTY + "+00:00"


def test_7_declined_rights_change_nothing(db):
    result = _run(answer="n\n")
    assert result.exit_code == 1
    assert _offset_begin(db) == FAULTY + "+00:00"


def test_7_plan_lists_the_versions_and_changes_nothing(db):
    result = CliRunner().invoke(app, [
        "plan", "disable-constants", "--site", "local", "-i", "LAB", "--probe",
        "-p", "physical_device=M304", "-p", "start_from=2020-03-01", "-p",
        "start_to=2020-03-31", "-p", "why=x y z", "-f", "json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    kinds = {s["id"]: (s["kind"], s["outcome"]) for s in plan["steps"]}
    assert kinds["find"] == ("check", "ok") and kinds["disable"] == ("action", "planned")
    assert plan["steps"][[s["id"] for s in plan["steps"]].index("disable")]["resolved"][
        "danger"] is True
    assert _offset_begin(db) == FAULTY + "+00:00"
