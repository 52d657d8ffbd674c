"""JUNGFRAU darks (three runs, gain in the top two bits): Offset10Hz & co. in the DB."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
from rich.console import Console

from caldb.store import CalDB
from detectors import get_detector_type
from detectors.dark.job import run_modules
from detectors.dark.resolve import resolve_job
from detectors.dark.seed import dark_seed
from sim.rawdata import write_raw_run

KARABO_ID = "FXE_XAD_JF1M"
CREATED = datetime(2021, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_jungfrau_darks_by_cell_block(tmp_path):
    det = get_detector_type("JUNGFRAU")
    runs = [write_raw_run(tmp_path, "FXE", 202101, 2551, run, "JUNGFRAU", KARABO_ID,
                          modules=[2], trains=12, cells=3, gain_stage=gain, seed=3, when=CREATED)
            for gain, run in enumerate((11, 12, 13))]
    url = f"sqlite:///{tmp_path / 'caldb.sqlite'}"
    with CalDB.open(url, tmp_path / "store") as db:
        db.seed(dark_seed(det, KARABO_ID, [1, 2], datetime(2020, 1, 1, tzinfo=UTC)))
    # one memory cell per block: 3 runs × 12 trains × 1 MiB frames > 30 MiB
    job = resolve_job(instrument="FXE", detector="jungfrau", runs="11,12,13", proposal=2551,
                      raw_root=runs[0].path.parent, report_root=tmp_path / "reports",
                      db_url=url, store_root=tmp_path / "store", max_block_mib=30,
                      conditions=["integration_time=25"])
    assert job.karabo_id == KARABO_ID and job.detector is det
    out = io.StringIO()
    (summary,) = run_modules(job, Console(file=out, width=200))
    text = out.getvalue()
    assert "3 cells in blocks of 1" in text
    for name in ("Offset10Hz", "Noise10Hz", "BadPixelsDark10Hz"):
        assert f"Inject {name} constants from 2021-03-01 13:00:00+01:00" in text
    assert summary.karabo_da == "JNGFR02" and len(summary.injections) == 3

    conditions = det.conditions(sensor_bias_voltage=180, memory_cells=3, integration_time=25,
                                gain_setting=0)
    with CalDB.open(url, tmp_path / "store") as db:
        version = db.find_one(calibration="Offset10Hz", detector=KARABO_ID, karabo_da="JNGFR02",
                              conditions=conditions, event_at=CREATED)
        offset = db.read(version)
    assert offset.shape == (1024, 512, 3, 3)          # the facility's (x, y, cell, gain)
    for gain, run in enumerate(runs):
        truth = run.truth[2]
        error = np.abs(offset.T[gain] - truth.offset)
        assert np.median(error / (truth.noise / np.sqrt(12))) < 1.5
