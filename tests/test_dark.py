"""Section 5 / 8 / 8.2: `runbook dark` from RAW dark runs to constants in the DB and a report.

The runs are written in the facility's RAW format by sim.rawdata (2 AGIPD modules × 20
trains × 4 cells, one run per gain stage); the DB is a SQLite caldb in tmp_path.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from caldb.cli import app as caldb_app
from caldb.store import CalDB
from detectors import get_detector_type
from detectors.dark.cli import app as dark_app
from detectors.dark.seed import dark_seed
from kernels import BadPixels
from sim.rawdata import write_raw_run

KARABO_ID = "SPB_DET_AGIPD1M-1"
RUNS = (67, 68, 69)
CREATED = datetime(2020, 7, 23, 7, 6, 39, tzinfo=UTC)   # 09:06:39+02:00 in Hamburg
AGIPD = get_detector_type("AGIPD")
CONDITIONS = AGIPD.conditions(sensor_bias_voltage=300, memory_cells=4, acquisition_rate=1.1,
                              gain_setting=0)


@pytest.fixture(scope="module")
def agipd_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    runs = [write_raw_run(root, "SPB", 202031, 900146, run, "AGIPD", KARABO_ID,
                          modules=[0, 1], trains=20, cells=4, gain_stage=gain, seed=5,
                          when=CREATED)
            for gain, run in enumerate(RUNS)]
    return runs[0].path.parent, runs


@pytest.fixture
def caldb(tmp_path):
    url = f"sqlite:///{tmp_path / 'caldb.sqlite'}"
    store = tmp_path / "store"
    seed = tmp_path / "seed.yaml"
    spec = dark_seed(AGIPD, KARABO_ID, range(16), datetime(2019, 1, 1, tzinfo=UTC))
    YAML(typ="safe", pure=True).dump(json.loads(json.dumps(spec, default=str)), seed.open("w"))
    return url, store, seed


def _dark(raw_root, caldb, tmp_path, *extra):
    url, store, seed = caldb
    args = ["--instrument", "SPB", "--detector", KARABO_ID, "--runs", ",".join(map(str, RUNS)),
            "--proposal", "900146", "--raw-root", str(raw_root),
            "--report-root", str(tmp_path / "reports"), "--db", url, "--store-root", str(store),
            "--seed", str(seed), *extra]
    return CliRunner().invoke(dark_app, args)


def test_dark_characterization_end_to_end(agipd_runs, caldb, tmp_path):
    raw_root, runs = agipd_runs
    result = _dark(raw_root, caldb, tmp_path)
    assert result.exit_code == 0, result.output
    # 8.2: the facility's notebook lines, once per module and constant
    for name in ("Offset", "Noise", "ThresholdsDark", "BadPixelsDark"):
        line = f"Inject {name} constants from 2020-07-23 09:06:39+02:00"
        assert result.output.count(line) == 2, result.output

    # 8 C: dark_<proposal>_r67_r68_r69_<time stamp> under {instrument}/{det_instance}/dark
    parent = tmp_path / "reports" / "SPB" / KARABO_ID / "dark"
    (report,) = parent.iterdir()
    assert re.fullmatch(r"dark_900146_r67_r68_r69_\d{6}_\d{6}", report.name)
    page = (report / "index.html").read_text()
    assert "Input parameters" in page and "injected" in page
    pngs = sorted(p.name for p in report.glob("*.png"))
    assert pngs == sorted(["offset_maps.png", "noise_maps.png", "offset_histograms.png",
                           "noise_histograms.png", "bad_pixels_per_module.png",
                           "bad_pixels_per_flag.png"])
    assert all((report / p).stat().st_size > 1000 for p in pngs)

    # `runbook caldb find` finds them again, for both modules
    url, store, _ = caldb
    args = ["find", "--db", url, "--store-root", str(store), "-d", KARABO_ID,
            "-c", "Offset", "-c", "Noise", "-c", "BadPixelsDark", "-c", "ThresholdsDark",
            "--event-at", "2020-07-24T00:00:00Z", "--strategy", "prior", "--json"]
    for name, value in CONDITIONS.items():
        args += ["-C", f"{name}={value}"]
    found = CliRunner().invoke(caldb_app, args)
    assert found.exit_code == 0, found.output
    versions = json.loads(found.output)
    assert sorted((v["karabo_da"], v["calibration"]) for v in versions) == sorted(
        (da, c) for da in ("AGIPD00", "AGIPD01")
        for c in ("Offset", "Noise", "BadPixelsDark", "ThresholdsDark"))
    assert {v["begin_at"][:19] for v in versions} == {"2020-07-23T07:06:39"}

    # the offsets agree with what was written, gain by gain
    with CalDB.open(url, store) as db:
        by_key = {(v["karabo_da"], v["calibration"]): v["id"] for v in versions}
        for module, da in ((0, "AGIPD00"), (1, "AGIPD01")):
            offset = db.read(db.get(by_key[da, "Offset"])).T      # [gain, cell, x, y]
            noise = db.read(db.get(by_key[da, "Noise"])).T
            bad = db.read(db.get(by_key[da, "BadPixelsDark"])).T
            thresholds = db.read(db.get(by_key[da, "ThresholdsDark"])).T
            assert offset.shape == (3, 4, 512, 128) and bad.dtype == np.uint32
            for gain, run in enumerate(runs):
                truth = run.truth[module]
                error = np.abs(offset[gain] - truth.offset)
                sigma = truth.noise / np.sqrt(20)
                assert np.median(error / sigma) < 1.5
                assert np.mean(error < 5 * sigma + 1) > 0.999
                good = ~truth.noisy
                assert np.median(np.abs(noise[gain][:, good] - truth.noise[good])
                                 / truth.noise[good]) < 0.2
            # ThresholdsDark: the high/medium boundary between the two digital levels
            low, high = runs[0].truth[module].digital, runs[1].truth[module].digital
            assert np.all((thresholds[0] > low) & (thresholds[0] < high))
            # the pixels made noisy on purpose are flagged in high gain
            noisy = runs[0].truth[module].noisy
            flagged = (bad[0][:, noisy] & BadPixels.NOISE_OUT_OF_THRESHOLD) != 0
            assert noisy.any() and flagged.all()

    # a second characterization of the same runs: "Version already taken", and it goes on
    again = _dark(raw_root, caldb, tmp_path)
    assert again.exit_code == 0, again.output
    assert again.output.count("Version already taken") == 8
    assert "Inject Offset" not in again.output
    assert "0 constant(s) injected, 8 already taken" in again.output
    assert len(list(parent.iterdir())) in (1, 2)   # same second: the same folder


def test_runs_in_the_wrong_gain_order_are_refused(agipd_runs, caldb, tmp_path):
    raw_root, _ = agipd_runs
    url, store, seed = caldb
    result = CliRunner().invoke(dark_app, [
        "--instrument", "SPB", "--detector", KARABO_ID, "--runs", "69,68,67",
        "--proposal", "900146", "--raw-root", str(raw_root), "--db", url,
        "--store-root", str(store), "--report-root", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "do not rise" in result.output and "run 69: 8" in result.output
    assert not (tmp_path / "r").exists()


def test_missing_runs_are_all_named(tmp_path, caldb):
    result = _dark(tmp_path / "nothing", caldb, tmp_path)
    assert result.exit_code == 1
    for run in RUNS:
        assert f"run {run}: no run folder at {tmp_path / 'nothing'}/r00{run}" in result.output


def test_a_module_the_runs_lack_is_named(agipd_runs, caldb, tmp_path):
    raw_root, _ = agipd_runs
    result = _dark(raw_root, caldb, tmp_path, "--modules", "1-2")
    assert result.exit_code == 1
    assert "lacks module(s) AGIPD02" in result.output


def test_conditions_must_be_complete_and_known(agipd_runs, caldb, tmp_path):
    raw_root, _ = agipd_runs
    result = _dark(raw_root, caldb, tmp_path, "-C", "bias=200")
    assert result.exit_code == 1
    assert "unknown parameter 'bias'" in result.output


def test_slurm_writes_one_script_per_module_block_then_needs_sbatch(agipd_runs, caldb, tmp_path,
                                                                   monkeypatch):
    raw_root, _ = agipd_runs
    monkeypatch.setenv("PATH", str(tmp_path))          # no sbatch on this "host"
    result = _dark(raw_root, caldb, tmp_path, "--slurm", "--modules-per-job", "1",
                   "--modules", "0-1")
    assert result.exit_code == 1
    assert "'sbatch' is not installed on this host" in result.output
    (report,) = (tmp_path / "reports" / "SPB" / KARABO_ID / "dark").iterdir()
    scripts = sorted(p.name for p in (report / "slurm").glob("*.sh"))
    assert scripts == ["dark_900146_r67_r68_r69_m0.sh", "dark_900146_r67_r68_r69_m1.sh",
                       "dark_900146_r67_r68_r69_report.sh"]
    command = (report / "slurm" / scripts[1]).read_text().strip().splitlines()[-1]
    for expected in ("--phase modules --modules 1", f"--run-dir {raw_root}/r0069",
                     f"--report-dir {report}", "--detector-type AGIPD", "--db sqlite:///"):
        assert expected in command
    # what each Slurm job would run, run here in order: the modules, then the report
    import shlex

    monkeypatch.undo()
    for name in scripts:
        argv = shlex.split((report / "slurm" / name).read_text().strip().splitlines()[-1])
        assert argv[:4] == ["exec", argv[1], "-m", "detectors.dark"]
        job = CliRunner().invoke(dark_app, argv[4:])
        assert job.exit_code == 0, job.output
        if name.endswith("_m0.sh"):
            assert "Inject Offset constants from 2020-07-23 09:06:39+02:00" in job.output
    page = (report / "index.html").read_text()
    assert page.count('class="injected"') == 8
    assert sorted(p.name for p in (report / "parts").iterdir()) == [
        "AGIPD00.npz", "AGIPD01.npz", "meta.json"]
