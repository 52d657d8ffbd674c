"""RAW runs from the twin's writer open, validate and read like the facility's runs."""

import subprocess
import sys
from pathlib import Path

import extra_data
import h5py
import numpy as np
import pytest
from extra_data.components import AGIPD1M

from detectors import RawDataError, get_detector_type, open_detector, read_dark_module, run_sources
from sim.rawdata import run_path, write_raw_run

VALIDATE = Path(sys.executable).parent / "extra-data-validate"
AGIPD_ID = "SPB_DET_AGIPD1M-1"
SLOW = {
    "SPB_IRU_AGIPD1M1/MDL/FPGA_COMP": {
        "bunchStructure.nPulses": 4,
        "bunchStructure.repetitionRate": 1.1,
        "gain": 0,
        "gainModeIndex": 0,
        "classId": "AgipdComposite",
    }
}


@pytest.fixture(scope="module")
def agipd_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpfs")
    return write_raw_run(
        root,
        "SPB",
        202031,
        900146,
        39,
        "AGIPD",
        AGIPD_ID,
        trains=5,
        cells=4,
        sequence_trains=3,
        first_train_id=1_234_567_000,
        slow_data=SLOW,
    )


def test_run_lies_in_the_gpfs_tree(agipd_run):
    assert agipd_run.path.as_posix().endswith("gpfs/exfel/exp/SPB/202031/p900146/raw/r0039")
    names = sorted(p.name for p in agipd_run.path.iterdir())
    assert "RAW-R0039-AGIPD00-S00000.h5" in names
    assert "RAW-R0039-AGIPD15-S00001.h5" in names
    assert "RAW-R0039-DA01-S00001.h5" in names
    assert len(names) == 16 * 2 + 2


def test_run_directory_opens_it(agipd_run):
    run = extra_data.RunDirectory(str(agipd_run.path))
    np.testing.assert_array_equal(run.train_ids, np.arange(1_234_567_000, 1_234_567_005))
    assert run.instrument_sources == {f"{AGIPD_ID}/DET/{m}CH0:xtdf" for m in range(16)}
    assert run.control_sources == set(SLOW)
    src = run[f"{AGIPD_ID}/DET/7CH0:xtdf"]
    assert {
        "image.data",
        "image.cellId",
        "image.pulseId",
        "image.trainId",
        "image.length",
        "image.status",
        "header.pulseCount",
        "trailer.magicNumberEnd",
        "detector.data",
    } <= src.keys()
    assert src["image.data"].shape == (20, 2, 512, 128)
    assert src["image.data"].dtype == np.uint16
    np.testing.assert_array_equal(src["image.pulseId"].ndarray()[:4, 0], [0, 4, 8, 12])
    meta = run.run_metadata()
    assert meta["dataFormatVersion"] == "1.2"
    assert (meta["proposalNumber"], meta["runNumber"]) == (900146, 39)


def test_slow_data_has_control_and_run_values(agipd_run):
    run = extra_data.RunDirectory(str(agipd_run.path))
    fpga = "SPB_IRU_AGIPD1M1/MDL/FPGA_COMP"
    assert run[fpga, "bunchStructure.nPulses"].ndarray().tolist() == [4] * 5
    assert run.get_run_value(fpga, "classId") == "AgipdComposite"
    assert run.get_run_value(fpga, "bunchStructure.repetitionRate") == pytest.approx(1.1)


def test_agipd1m_component_reads_all_modules(agipd_run):
    det = AGIPD1M(extra_data.RunDirectory(str(agipd_run.path)), raw=True)
    assert det.detector_name == AGIPD_ID
    data = det["image.data"]
    assert data.shape == (16, 20, 2, 512, 128)
    arr = data.ndarray()
    assert (arr[:, :, 0] > 0).all()
    np.testing.assert_array_equal(data.cell_id_coordinates()[:8], [0, 1, 2, 3] * 2)
    assert open_detector(agipd_run.path, "AGIPD", AGIPD_ID).n_modules == 16


def test_extra_data_validate_passes(agipd_run):
    result = subprocess.run(
        [str(VALIDATE), str(agipd_run.path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No problems found" in result.stdout


def test_run_sources_maps_modules(agipd_run):
    sources = run_sources(agipd_run.path, "agipd")
    assert list(sources) == list(range(16))
    assert sources[3] == f"{AGIPD_ID}/DET/3CH0:xtdf"


def test_read_dark_module_gives_frames_cells_trains(agipd_run):
    frames = read_dark_module(agipd_run.path, "AGIPD", 5)
    assert frames.data.shape == (20, 2, 512, 128)
    np.testing.assert_array_equal(frames.cell_ids, [0, 1, 2, 3] * 5)
    np.testing.assert_array_equal(frames.train_ids, np.repeat(agipd_run.train_ids, 4))


def test_read_dark_module_by_train_block(agipd_run):
    frames = read_dark_module(agipd_run.path, "AGIPD", 0, trains=slice(1, 3))
    np.testing.assert_array_equal(frames.train_ids, np.repeat(agipd_run.train_ids[1:3], 4))
    assert frames.data.shape == (8, 2, 512, 128)
    with pytest.raises(RawDataError, match="is empty"):
        read_dark_module(agipd_run.path, "AGIPD", 0, trains=slice(10, 12))


@pytest.fixture(scope="module")
def agipd_dark(tmp_path_factory):
    root = tmp_path_factory.mktemp("dark")
    return write_raw_run(
        root,
        "MID",
        202201,
        2222,
        7,
        "AGIPD",
        "MID_DET_AGIPD1M-1",
        modules=[2],
        trains=30,
        cells=3,
        gain_stage=1,
        seed=5,
    )


def test_dark_mean_recovers_the_written_offsets(agipd_dark):
    frames = read_dark_module(agipd_dark.path, "AGIPD", 2)
    truth = agipd_dark.truth[2]
    analog = frames.data[:, 0].astype(np.float64)
    for cell in range(3):
        sel = analog[frames.cell_ids == cell]
        tolerance = 6 * truth.noise / np.sqrt(len(sel)) + 0.5
        assert (np.abs(sel.mean(axis=0) - truth.offset[cell]) < tolerance).all()
    noise = analog[frames.cell_ids == 0].std(axis=0, ddof=1)
    ratio = np.median(noise / truth.noise)
    assert 0.9 < ratio < 1.1
    assert np.median(noise[truth.noisy]) > 4 * np.median(noise[~truth.noisy])


def test_digital_plane_reflects_the_gain_stage(agipd_dark):
    frames = read_dark_module(agipd_dark.path, "AGIPD", 2)
    digital = frames.data[:, 1].astype(np.float64)
    thresholds = np.array([6050.0, 7500.0])  # between the HG/MG/LG digital levels
    stage = (digital > thresholds[0]).astype(int) + (digital > thresholds[1])
    assert (stage == 1).mean() > 0.999


@pytest.mark.parametrize(
    ("name", "karabo_id", "modules", "stage", "key", "entry_shape"),
    [
        ("JUNGFRAU", "FXE_XAD_JF1M", [1, 2], 2, "data.adc", (4, 512, 1024)),
        ("LPD", "FXE_DET_LPD1M-1", [0], 1, "image.data", (1, 256, 256)),
        ("DSSC", "SCS_DET_DSSC1M-1", [0], None, "image.data", (1, 128, 512)),
        ("EPIX100", "MID_EXP_EPIX-1", None, None, "data.image.pixels", (708, 768)),
        ("PNCCD", "SQS_NQS_PNCCD1MP", None, None, "data.image", (1024, 1024)),
        ("FASTCCD", "SCS_CDIDET_FCCD2M", None, None, "data.image.pixels", (1934, 960)),
    ],
)
def test_other_detectors_write_validate_and_read(
    tmp_path, name, karabo_id, modules, stage, key, entry_shape
):
    det = get_detector_type(name)
    written = write_raw_run(
        tmp_path,
        "FXE",
        202401,
        3000,
        12,
        name,
        karabo_id,
        modules=modules,
        trains=8,
        cells=4 if det.memory_cells > 1 else 1,
        gain_stage=stage,
    )
    run = extra_data.RunDirectory(str(written.path))
    module = next(iter(written.sources))
    assert run[written.sources[module], key].entry_shape == entry_shape
    result = subprocess.run(
        [str(VALIDATE), str(written.path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout
    frames = read_dark_module(written.path, name, module)
    cells = len(written.cell_ids)
    assert frames.data.shape == (8 * cells, *det.module_shape)
    adc = det.gain.adc(frames.data).astype(np.float64)
    if det.gain.kind == "bits":
        assert (det.gain.stage(frames.data) == (stage or 0)).all()
    mean = adc.reshape(8, cells, *det.module_shape).mean(axis=0)
    tolerance = 6 * written.truth[module].noise / np.sqrt(8) + 0.5
    assert (np.abs(mean - written.truth[module].offset) < tolerance).all()


def test_jungfrau_raw_file_keeps_gain_apart(tmp_path):
    written = write_raw_run(
        tmp_path,
        "SPB",
        202401,
        3000,
        1,
        "JUNGFRAU",
        "SPB_IRDA_JF4M",
        modules=[3],
        trains=2,
        cells=2,
        gain_stage=2,
    )
    with h5py.File(written.files[0]) as f:
        base = "INSTRUMENT/SPB_IRDA_JF4M/DET/JNGFR03:daqOutput/data"
        assert f[f"{base}/adc"][:].max() < 1 << 14
        assert set(np.unique(f[f"{base}/gain"][:])) == {3}
        np.testing.assert_array_equal(f[f"{base}/memoryCell"][:], [[0, 1], [0, 1]])


def test_realistic_size_uses_all_memory_cells(tmp_path):
    written = write_raw_run(
        tmp_path,
        "FXE",
        202401,
        3000,
        2,
        "JUNGFRAU",
        "FXE_XAD_JF500K",
        modules=[1],
        size="realistic",
        trains=1,
    )
    assert len(written.cell_ids) == 16


def test_paths_are_gpfs_shaped(tmp_path):
    assert run_path(tmp_path, "SQS", "202031", 900166, 39) == (
        tmp_path / "gpfs/exfel/exp/SQS/202031/p900166/raw/r0039"
    )


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(gain_stage=1, detector_type="PNCCD"), "gain stages 0..0"),
        (dict(cells=400), "1..352 cells"),
        (dict(modules=[16]), "module numbers run from 0 to 15"),
        (dict(acquisition_rate=3.0), "acquisition_rate"),
        (dict(instrument="spb"), "three capitals"),
        (dict(cycle="2020"), "six digits"),
        (dict(detector_type="AGIPDX"), "did you mean 'AGIPD'"),
    ],
)
def test_writer_refuses_bad_arguments(tmp_path, kwargs, match):
    args = dict(
        root=tmp_path,
        instrument="SPB",
        cycle=202031,
        proposal=1,
        run=1,
        detector_type="AGIPD",
        karabo_id=AGIPD_ID,
        modules=[0],
        trains=1,
        cells=1,
    )
    args.update(kwargs)
    with pytest.raises(Exception, match=match):
        write_raw_run(**args)


def test_reader_errors_name_what_is_missing(agipd_run, tmp_path):
    with pytest.raises(RawDataError, match="cannot open raw run"):
        read_dark_module(tmp_path / "nope", "AGIPD", 0)
    with pytest.raises(RawDataError, match="no LPD sources"):
        run_sources(agipd_run.path, "LPD", "FXE_DET_LPD1M-1")
    with pytest.raises(RawDataError, match="expected one LPD in the run, found none"):
        run_sources(agipd_run.path, "LPD")


def test_missing_module_is_reported(tmp_path):
    written = write_raw_run(
        tmp_path, "SPB", 202031, 1, 1, "AGIPD", AGIPD_ID, modules=[0, 1], trains=1, cells=1
    )
    with pytest.raises(RawDataError, match=r"module 4 \(AGIPD04\) is not in the run"):
        read_dark_module(written.path, "AGIPD", 4)
