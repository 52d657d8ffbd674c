"""daq.run_files on RAW runs written by the twin's writer and opened by EXtra-data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from checks.daq import RunFiles, run_files
from engine.context import Context
from engine.registry import Registry
from engine.result import Result
from sim.rawdata import RawRun, write_raw_run

KARABO_ID = "SPB_DET_AGIPD1M-1"


def ctx() -> Context:
    return Context(mode="diagnose", site="test", transport={})


def check(path: Path | str, **params: Any) -> Result:
    return run_files(RunFiles.model_validate({"path": str(path), **params}), ctx())


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory: pytest.TempPathFactory) -> RawRun:
    root = tmp_path_factory.mktemp("gpfs")
    return write_raw_run(root, "SPB", "202401", 900001, 39, "AGIPD", KARABO_ID,
                         modules=[0, 1, 2], trains=4)


def test_run_with_everything_expected(raw_run: RawRun) -> None:
    size = sum(f.stat().st_size for f in raw_run.files)
    result = check(raw_run.path, min_trains=4, min_bytes=size,
                   sources=[f"{KARABO_ID}/DET/0CH0:xtdf", f"{KARABO_ID}/DET/*CH0:xtdf"])
    assert result.outcome == "ok", result
    assert result.observed["trains"] == 4
    assert result.observed["files"] == 3
    assert result.observed["bytes"] == size
    assert result.observed["first_train"] == int(raw_run.train_ids[0])
    assert result.observed["sources"] == sorted(raw_run.sources.values())


@pytest.mark.parametrize(("params", "problem"), [
    pytest.param({"min_trains": 5}, "4 trains, expected at least 5", id="too-few-trains"),
    pytest.param({"sources": [f"{KARABO_ID}/DET/15CH0:xtdf"]}, "no source matches",
                 id="module-missing"),
    pytest.param({"min_bytes": 10**12}, "expected at least 1000000000000", id="too-small"),
])
def test_run_lacking_what_is_expected(raw_run: RawRun, params: dict[str, Any],
                                      problem: str) -> None:
    result = check(raw_run.path, **params)
    assert result.outcome == "fail"
    assert any(problem in p for p in result.observed["problems"]), result.observed


def test_missing_folder_fails(tmp_path: Path) -> None:
    result = check(tmp_path / "raw" / "r0040")
    assert result.outcome == "fail"
    assert "no such run folder" in result.evidence


def test_empty_folder_fails(tmp_path: Path) -> None:
    result = check(tmp_path)
    assert result.outcome == "fail"
    assert "no HDF5 files" in result.evidence


def test_only_broken_files_fail(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "RAW-R0041-AGIPD00-S00000.h5").write_bytes(b"not hdf5")
    result = check(tmp_path)
    assert result.outcome == "fail"
    assert result.observed["unusable"] == ["RAW-R0041-AGIPD00-S00000.h5"]
    assert capfd.readouterr().err == ""


def test_broken_file_next_to_good_ones_is_listed(tmp_path: Path) -> None:
    run = write_raw_run(tmp_path, "SPB", "202401", 900001, 42, "AGIPD", KARABO_ID,
                        modules=[0], trains=2)
    (run.path / "RAW-R0042-AGIPD01-S00000.h5").write_bytes(b"truncated")
    result = check(run.path, min_trains=2)
    assert result.outcome == "ok"
    assert result.observed["files"] == 1
    assert result.observed["unusable"] == ["RAW-R0042-AGIPD01-S00000.h5"]


def test_unreadable_path_is_unknown(tmp_path: Path) -> None:
    not_a_folder = tmp_path / "r0043"
    not_a_folder.write_text("a file where the run folder should be")
    result = check(not_a_folder)
    assert result.outcome == "unknown"
    assert "cannot read the run folder" in result.reason


def test_registered_with_its_model() -> None:
    reg = Registry()
    reg.load_entry_points()
    entry = reg.get("daq.run_files")
    assert entry.kind == "check" and entry.model is RunFiles
    with pytest.raises(ValueError):
        RunFiles.model_validate({"path": "/x", "min_trains": -1})
