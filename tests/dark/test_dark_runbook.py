"""The dark-characterization runbook (section 5, with 8 and 8.2) walked against real runs."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

import checks.dark
from caldb.store import CalDB
from detectors import get_detector_type
from detectors.dark.seed import dark_seed
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import Registry
from engine.walk import Walker
from sim.rawdata import write_raw_run

REPO = Path(__file__).resolve().parents[2]
KARABO_ID = "SPB_DET_AGIPD1M-1"


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    runs = [write_raw_run(root, "SPB", 202031, 900146, run, "AGIPD", KARABO_ID, modules=[3],
                          trains=10, cells=2, gain_stage=gain, seed=7)
            for gain, run in enumerate((67, 68, 69))]
    return runs[0].path.parent


def _catalog(tmp_path):
    reg = Registry()
    reg.load_entry_points()
    if "dark.runs" not in reg:       # until the entry point `dark = "checks.dark"` exists
        reg.register_module(checks.dark)
    folder = tmp_path / "runbooks"
    folder.mkdir()
    shutil.copy(REPO / "runbooks" / "dark-characterization.yaml", folder)
    return load_catalog([folder], reg), reg


def _params(raw_root, tmp_path, runs="67,68,69"):
    url = f"sqlite:///{tmp_path / 'caldb.sqlite'}"
    with CalDB.open(url, tmp_path / "store") as db:
        db.seed(dark_seed(get_detector_type("AGIPD"), KARABO_ID, [3],
                          datetime(2019, 1, 1, tzinfo=UTC)))
    return {"instrument": "SPB", "detector": KARABO_ID, "runs": runs, "proposal": "900146",
            "raw_root": str(raw_root), "report_root": str(tmp_path / "reports"),
            "db": url, "store_root": str(tmp_path / "store")}


def test_the_runbook_characterizes_injects_and_finds_the_report(small_runs, tmp_path):
    catalog, reg = _catalog(tmp_path)
    walker = Walker(catalog, reg, load_site("xfel"), mode="run", instrument="SPB", yes=True)
    report = walker.walk("dark-characterization", _params(small_runs, tmp_path))
    outcomes = {s.id: s.outcome for s in report.steps}
    assert report.findings == [], [s.reason for s in report.steps]
    assert outcomes == {"runs-present": "ok", "characterize": "done",
                        "constants-injected": "ok", "report-present": "ok"}
    step = {s.id: s for s in report.steps}
    assert step["characterize"].observed["injected"] == 4
    assert "Inject ThresholdsDark constants from" in step["characterize"].evidence
    assert step["constants-injected"].observed["constants"] == 4
    assert step["report-present"].observed["figures"] == 6


def test_runs_out_of_gain_order_end_in_the_no_dark_data_finding(small_runs, tmp_path):
    catalog, reg = _catalog(tmp_path)
    walker = Walker(catalog, reg, load_site("xfel"), mode="run", instrument="SPB", yes=True)
    report = walker.walk("dark-characterization",
                         _params(small_runs, tmp_path, runs="68,67,69"))
    assert [f.id for f in report.findings] == ["no-dark-data"]
    assert "characterize" not in {s.id for s in report.steps}
    assert not (tmp_path / "reports").exists()


def test_in_plan_mode_nothing_is_injected(small_runs, tmp_path):
    catalog, reg = _catalog(tmp_path)
    walker = Walker(catalog, reg, load_site("xfel"), mode="plan", instrument="SPB")
    params = _params(small_runs, tmp_path)
    walker.walk("dark-characterization", params)
    with CalDB.open(params["db"], params["store_root"]) as db:
        assert db.stats()["versions"] == 0
    assert not (tmp_path / "reports").exists()
