"""RAW runs in the facility's file format, with dark data whose truth is known.

The twin's DAQ and the dark-characterization tests need runs that `extra_data` and
`extra-data-validate` accept exactly as they accept the facility's files, and whose
per-pixel offsets and noise are known so that a characterization can be checked.
The layout follows EuXFEL file format 1.2 (METADATA, INDEX with per-group first/count,
INSTRUMENT, CONTROL/RUN), as EXtra-data's readers and validator expect it.

Sizes: every frame has the real geometry, so one AGIPD frame is 256 KiB. The default
(`trains=2, cells=2`) is 1 MiB per AGIPD module, 16 MiB for AGIPD-1M; a dark
characterization passes more trains, and `size="realistic"` gives 100 trains of the
detector's full memory-cell count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import h5py
import numpy as np

from detectors import DetectorType, get_detector_type

__all__ = ["DarkTruth", "RawRun", "DARK_LEVELS", "write_raw_run", "run_path", "dark_truth"]

FORMAT_VERSION = "1.2"
DEFAULT_FIRST_TRAIN = 1_500_000_000
TRAIN_PERIOD_NS = 100_000_000  # 10 Hz
_VLEN = h5py.special_dtype(vlen=bytes)
_FrameMaker = Callable[[np.ndarray], np.ndarray]

# Per gain stage: (mean offset, spread of offsets between pixels, noise) in ADU. AGIPD's sit
# inside the facility's hard ranges (kernels.DarkSettings), so only the planted bad pixels flag.
DARK_LEVELS: Mapping[str, tuple[tuple[float, float, float], ...]] = {
    "AGIPD": ((5000.0, 300.0, 8.0), (7500.0, 300.0, 6.0), (8000.0, 300.0, 5.0)),
    "LPD": ((1100.0, 150.0, 6.0), (1150.0, 150.0, 2.0), (1200.0, 150.0, 1.0)),
    "DSSC": ((60.0, 8.0, 1.2),),
    "JUNGFRAU": ((3300.0, 250.0, 12.0), (13500.0, 300.0, 4.0), (14500.0, 300.0, 3.0)),
    "EPIX100": ((7000.0, 400.0, 3.5),),
    "PNCCD": ((3500.0, 300.0, 4.0),),
    "FASTCCD": ((1200.0, 150.0, 5.0),),
}
# AGIPD digital plane per stage: (mean level, spread, noise); ThresholdsDark sits between.
AGIPD_DIGITAL = ((5300.0, 100.0, 3.0), (6800.0, 100.0, 3.0), (8200.0, 100.0, 3.0))
_XTDF_DETECTOR_BYTES = {"AGIPD": 5408, "LPD": 416, "DSSC": 416}
_PULSE_STEP = {4.5: 1, 2.2: 2, 1.1: 4, 0.5: 9}


@dataclass(frozen=True)
class DarkTruth:
    """What was written for one module: the answer a dark characterization must find.

    `offset` is (cells, *plane) in ADU for the analog plane at the run's gain stage,
    `noise` is the per-pixel sigma, `digital` the AGIPD digital level (or None), and
    the masks mark pixels made noisy or with an outlying offset on purpose.
    """

    offset: np.ndarray
    noise: np.ndarray
    digital: np.ndarray | None
    noisy: np.ndarray
    offset_outlier: np.ndarray


@dataclass(frozen=True)
class RawRun:
    """A run written by `write_raw_run`: where it is and what it contains."""

    path: Path
    files: tuple[Path, ...]
    detector: DetectorType
    karabo_id: str
    sources: Mapping[int, str]
    train_ids: np.ndarray
    cell_ids: np.ndarray
    gain_stage: int
    truth: Mapping[int, DarkTruth]


def run_path(root: Path | str, instrument: str, cycle: str | int, proposal: int, run: int) -> Path:
    """`<root>/gpfs/exfel/exp/<INSTR>/<cycle>/p<proposal:06d>/raw/r<run:04d>`."""
    cycle = str(cycle)
    if not re.fullmatch(r"\d{6}", cycle):
        raise ValueError(f"cycle must be six digits like 202031, not {cycle!r}")
    if not re.fullmatch(r"[A-Z]{3}", instrument):
        raise ValueError(f"instrument must be three capitals like SPB, not {instrument!r}")
    if not 0 < proposal < 1_000_000 or not 0 < run < 10_000:
        raise ValueError(f"proposal {proposal} or run {run} out of range")
    return Path(root, "gpfs/exfel/exp", instrument, cycle, f"p{proposal:06d}", "raw", f"r{run:04d}")


def dark_truth(
    detector: DetectorType,
    cells: int,
    gain_stage: int,
    rng: np.random.Generator,
    bad_fraction: float = 0.001,
) -> DarkTruth:
    """Draw per-pixel, per-cell offsets and per-pixel noise for one module."""
    plane = detector.module_shape
    mean, spread, sigma = DARK_LEVELS[detector.name][gain_stage]
    base = mean + spread * rng.standard_normal(plane, dtype=np.float32)
    offset = base + 0.1 * spread * rng.standard_normal((cells, *plane), dtype=np.float32)
    noise = sigma * np.clip(1 + 0.15 * rng.standard_normal(plane, dtype=np.float32), 0.3, 3)
    noisy = rng.random(plane) < bad_fraction
    outlier = (rng.random(plane) < bad_fraction) & ~noisy
    noise[noisy] *= 8
    offset[:, outlier] = mean - 8 * spread
    offset = np.clip(offset, 4 * noise, detector.gain.adc_max - 4 * noise)
    digital = None
    if detector.gain.kind == "digital_plane":
        d_mean, d_spread, _ = AGIPD_DIGITAL[gain_stage]
        d_base = d_mean + d_spread * rng.standard_normal(plane, dtype=np.float32)
        digital = np.broadcast_to(d_base, (cells, *plane)).astype(np.float32)
    return DarkTruth(offset.astype(np.float32), noise.astype(np.float32), digital, noisy, outlier)


class _NoisePool:
    """Gaussian noise drawn once, sliced at random starts for each frame.

    Drawing fresh normals for every pixel of every frame dominates the writing time;
    slices of one pool at distinct random starts give each pixel independent samples
    across frames, which is what the per-pixel statistics need.
    """

    def __init__(self, rng: np.random.Generator, npix: int) -> None:
        self.rng = rng
        self.npix = npix
        self.pool = rng.standard_normal(2 * npix + 4096, dtype=np.float32)
        self.windows = np.lib.stride_tricks.sliding_window_view(self.pool, npix)

    def draw(self, n: int) -> np.ndarray:
        return self.windows[self.rng.integers(0, len(self.windows), n)]


def _frames(
    detector: DetectorType,
    truth: DarkTruth,
    cell_index: np.ndarray,
    gain_stage: int,
    pool: _NoisePool,
) -> np.ndarray:
    """Raw uint16 words for the given cells, shaped like the file's per-frame data."""
    plane = detector.module_shape
    n = len(cell_index)
    z = pool.draw(n).reshape(n, *plane)
    analog = detector.gain.encode(np.rint(truth.offset[cell_index] + truth.noise * z), gain_stage)
    if truth.digital is None:
        return analog.reshape(n, *detector.raw.frame_shape)
    d_sigma = AGIPD_DIGITAL[gain_stage][2]
    zd = pool.draw(n).reshape(n, *plane)
    digital = detector.gain.encode(np.rint(truth.digital[cell_index] + d_sigma * zd), 0)
    return np.stack([analog, digital], axis=1)


def _write_metadata(
    f: h5py.File, sources: Sequence[str], proposal: int, run: int, sequence: int, when: datetime
) -> None:
    grp = f.create_group("METADATA/dataSources")
    grp.create_dataset("dataSourceId", data=[s.encode() for s in sources], dtype=_VLEN)
    grp.create_dataset("root", data=[s.split("/", 1)[0].encode() for s in sources], dtype=_VLEN)
    grp.create_dataset("deviceId", data=[s.split("/", 1)[1].encode() for s in sources], dtype=_VLEN)
    stamp = when.strftime("%Y%m%dT%H%M%SZ").encode()
    text = {
        "dataFormatVersion": FORMAT_VERSION.encode(),
        "creationDate": stamp,
        "updateDate": stamp,
        "daqLibrary": b"1.x-twin",
        "karaboFramework": b"3.1.2",
        "runType": b"dark",
        "sample": b"No Sample",
    }
    for key, value in text.items():
        f.create_dataset(f"METADATA/{key}", data=[value], dtype=_VLEN)
    numbers = {"proposalNumber": proposal, "runNumber": run, "sequenceNumber": sequence}
    for key, number in numbers.items():
        f.create_dataset(f"METADATA/{key}", data=[number], dtype=np.uint32)


def _write_base_index(f: h5py.File, train_ids: np.ndarray, when: datetime) -> None:
    n = len(train_ids)
    t0 = int(when.timestamp()) * 1_000_000_000
    f.create_dataset("INDEX/trainId", data=train_ids.astype(np.uint64), maxshape=(None,))
    f.create_dataset(
        "INDEX/timestamp",
        data=t0 + TRAIN_PERIOD_NS * (train_ids - train_ids[0]).astype(np.uint64),
        maxshape=(None,),
    )
    f.create_dataset("INDEX/flag", data=np.ones(n, np.int32), maxshape=(None,))
    f.create_dataset("INDEX/origin", data=np.full(n, -1, np.int32), maxshape=(None,))


def _index(f: h5py.File, group: str, counts: np.ndarray) -> None:
    first = np.zeros(len(counts), np.uint64)
    first[1:] = np.cumsum(counts)[:-1]
    f.create_dataset(f"INDEX/{group}/first", data=first, maxshape=(None,))
    f.create_dataset(f"INDEX/{group}/count", data=counts.astype(np.uint64), maxshape=(None,))


def _write_xtdf(
    f: h5py.File,
    detector: DetectorType,
    src: str,
    train_ids: np.ndarray,
    cells: int,
    pulse_step: int,
    make_frames: _FrameMaker,
    compression: str | None,
) -> list[str]:
    n_tr = len(train_ids)
    n_fr = n_tr * cells
    frame_shape = detector.raw.frame_shape
    base = f"INSTRUMENT/{src}"
    for part in ("detector", "header", "trailer"):
        _index(f, f"{src}/{part}", np.ones(n_tr, np.uint64))
        f.create_dataset(f"{base}/{part}/trainId", data=train_ids, maxshape=(None,))
    _index(f, f"{src}/image", np.full(n_tr, cells, np.uint64))
    f.create_dataset(f"{base}/detector/data", (n_tr, _XTDF_DETECTOR_BYTES[detector.name]), "u1")
    magic = np.frombuffer(b"XTDF\x00\x00\x00\x00", np.int8)
    header: dict[str, np.ndarray] = {
        "dataId": np.zeros(n_tr, np.uint64),
        "linkId": np.zeros(n_tr, np.uint64),
        "magicNumberBegin": np.tile(magic, (n_tr, 1)),
        "majorTrainFormatVersion": np.full(n_tr, 2, np.uint32),
        "minorTrainFormatVersion": np.full(n_tr, 1, np.uint32),
        "pulseCount": np.full(n_tr, cells, np.uint64),
        "reserved": np.zeros((n_tr, 16), np.uint8),
    }
    for key, arr in header.items():
        f.create_dataset(f"{base}/header/{key}", data=arr)
    f.create_dataset(f"{base}/trailer/checksum", data=np.zeros((n_tr, 16), np.int8))
    f.create_dataset(f"{base}/trailer/magicNumberEnd", data=np.tile(magic, (n_tr, 1)))
    f.create_dataset(f"{base}/trailer/status", data=np.zeros(n_tr, np.uint64))

    cell_ids = np.tile(np.arange(cells, dtype=np.uint16), n_tr)
    per_frame: dict[str, np.ndarray] = {
        "trainId": np.repeat(train_ids, cells).astype(np.uint64),
        "pulseId": np.tile(np.arange(cells, dtype=np.uint64) * pulse_step, n_tr),
        "cellId": cell_ids,
        "length": np.full(n_fr, 2 * int(np.prod(frame_shape)), np.uint32),
        "status": np.zeros(n_fr, np.uint16),
    }
    for key, column in per_frame.items():
        f.create_dataset(f"{base}/image/{key}", data=column[:, None], maxshape=(None, 1))
    data = f.create_dataset(
        f"{base}/image/data",
        (n_fr, *frame_shape),
        np.uint16,
        maxshape=(None, *frame_shape),
        chunks=(1, *frame_shape),
        compression=compression,
    )
    for t in range(n_tr):
        data[t * cells : (t + 1) * cells] = make_frames(np.arange(cells))
    return [f"INSTRUMENT/{src}/{part}" for part in ("detector", "header", "image", "trailer")]


def _write_train_source(
    f: h5py.File,
    detector: DetectorType,
    src: str,
    train_ids: np.ndarray,
    cells: int,
    gain_stage: int,
    make_frames: _FrameMaker,
    compression: str | None,
) -> list[str]:
    n_tr = len(train_ids)
    raw = detector.raw
    group = raw.data_key.split(".", 1)[0]
    base = f"INSTRUMENT/{src}/{group}"
    _index(f, f"{src}/{group}", np.ones(n_tr, np.uint64))
    f.create_dataset(f"{base}/trainId", data=train_ids, maxshape=(None,))
    lead = (cells,) if raw.cells_axis else ()
    shape = (*lead, *raw.frame_shape)
    data_path = "INSTRUMENT/{}/{}".format(src, raw.data_key.replace(".", "/"))
    data = f.create_dataset(
        data_path,
        (n_tr, *shape),
        np.uint16,
        maxshape=(None, *shape),
        chunks=(1, *shape),
        compression=compression,
    )
    gain = None
    if raw.gain_key is not None:
        gain_path = "INSTRUMENT/{}/{}".format(src, raw.gain_key.replace(".", "/"))
        gain = f.create_dataset(
            gain_path, (n_tr, *shape), np.uint8, chunks=(1, *shape), compression=compression
        )
    if raw.cells_axis:
        assert raw.cell_key is not None
        cell_path = "INSTRUMENT/{}/{}".format(src, raw.cell_key.replace(".", "/"))
        f.create_dataset(cell_path, data=np.tile(np.arange(cells, dtype=np.uint8), (n_tr, 1)))
        f.create_dataset(
            f"{base}/frameNumber",
            data=np.arange(n_tr * cells, dtype=np.uint64).reshape(n_tr, cells),
        )
        f.create_dataset(f"{base}/timestamp", data=np.zeros((n_tr, cells), np.float64))
    elif raw.data_key.endswith("image.pixels"):
        f.create_dataset(
            f"{base}/image/dims",
            data=np.tile(np.array(raw.frame_shape[::-1], np.uint64), (n_tr, 1)),
        )
    for t in range(n_tr):
        words = make_frames(np.arange(cells)).reshape(shape)
        if gain is not None:
            data[t] = detector.gain.adc(words)
            gain[t] = np.full(shape, detector.gain.stage_codes[gain_stage], np.uint8)
        else:
            data[t] = words
    return [f"INSTRUMENT/{src}/{group}"]


def _write_slow(
    f: h5py.File, slow: Mapping[str, Mapping[str, object]], train_ids: np.ndarray, when: datetime
) -> list[str]:
    n_tr = len(train_ids)
    t0 = int(when.timestamp()) * 1_000_000_000
    for src, keys in slow.items():
        _index(f, src, np.ones(n_tr, np.uint64))
        for key, value in keys.items():
            path = key.replace(".", "/")
            arr = np.asarray(value)
            dtype = _VLEN if arr.dtype.kind in "US" else arr.dtype
            item = arr.astype(bytes) if arr.dtype.kind in "US" else arr
            f.create_dataset(
                f"CONTROL/{src}/{path}/value",
                data=np.broadcast_to(item, (n_tr, *arr.shape)),
                dtype=dtype,
            )
            f.create_dataset(f"CONTROL/{src}/{path}/timestamp", data=np.full(n_tr, t0, np.uint64))
            f.create_dataset(f"RUN/{src}/{path}/value", data=item[None], dtype=dtype)
            f.create_dataset(f"RUN/{src}/{path}/timestamp", data=np.array([t0], np.uint64))
    return [f"CONTROL/{src}" for src in slow]


def write_raw_run(
    root: Path | str,
    instrument: str,
    cycle: str | int,
    proposal: int,
    run: int,
    detector_type: str | DetectorType,
    karabo_id: str,
    *,
    modules: Iterable[int] | None = None,
    size: Literal["small", "realistic"] = "small",
    trains: int | None = None,
    cells: int | None = None,
    first_train_id: int = DEFAULT_FIRST_TRAIN,
    sequence_trains: int = 500,
    gain_stage: int | None = None,
    seed: int = 0,
    acquisition_rate: float = 1.1,
    bad_fraction: float = 0.001,
    slow_data: Mapping[str, Mapping[str, object]] | None = None,
    slow_aggregator: str = "DA01",
    compression: str | None = None,
    when: datetime | None = None,
) -> RawRun:
    """Write a dark RAW run in the facility's layout and return what was written.

    One file per module per sequence (`RAW-R0039-AGIPD00-S00000.h5`), plus one slow-data
    file per sequence when `slow_data` ({source: {key: value}}) is given.  `gain_stage`
    None means the adaptive-gain dark, which stays in the high-gain stage (0).
    """
    det = get_detector_type(detector_type)
    stage = 0 if gain_stage is None else gain_stage
    if not 0 <= stage < det.gain_stages:
        raise ValueError(
            f"{det.display_name} has gain stages 0..{det.gain_stages - 1}, not {gain_stage}"
        )
    default_trains, default_cells = (2, 2) if size == "small" else (100, det.memory_cells)
    n_trains = default_trains if trains is None else trains
    n_cells = min(default_cells, det.memory_cells) if cells is None else cells
    if not 1 <= n_cells <= det.memory_cells:
        raise ValueError(f"{det.display_name} has 1..{det.memory_cells} cells, not {n_cells}")
    if n_trains < 1 or sequence_trains < 1 or first_train_id < 1:
        raise ValueError("trains, sequence_trains and first_train_id must be positive")
    if acquisition_rate not in _PULSE_STEP:
        raise ValueError(f"acquisition_rate must be one of {sorted(_PULSE_STEP)} MHz")
    mods = list(det.module_numbers() if modules is None else modules)
    for m in mods:
        det.check_module(m)
    stamp = (when or datetime.now(UTC)).replace(microsecond=0)
    out = run_path(root, instrument, cycle, proposal, run)
    out.mkdir(parents=True, exist_ok=True)
    train_ids = np.arange(first_train_id, first_train_id + n_trains, dtype=np.uint64)
    truths: dict[int, DarkTruth] = {}
    files: list[Path] = []
    for m in mods:
        rng = np.random.default_rng([seed, m, stage])
        truth = truths[m] = dark_truth(det, n_cells, stage, rng, bad_fraction)
        pool = _NoisePool(rng, det.module_shape[0] * det.module_shape[1])

        def make_frames(idx: np.ndarray, truth: DarkTruth = truth, pool: _NoisePool = pool):
            return _frames(det, truth, idx, stage, pool)

        for seq, start in enumerate(range(0, n_trains, sequence_trains)):
            tids = train_ids[start : start + sequence_trains]
            path = out / f"RAW-R{run:04d}-{det.karabo_da(m)}-S{seq:05d}.h5"
            with h5py.File(path, "w") as f:
                f.create_group("CONTROL")
                f.create_group("RUN")
                _write_base_index(f, tids, stamp)
                src = det.source(karabo_id, m)
                if det.raw.layout == "xtdf":
                    ids = _write_xtdf(
                        f,
                        det,
                        src,
                        tids,
                        n_cells,
                        _PULSE_STEP[acquisition_rate],
                        make_frames,
                        compression,
                    )
                else:
                    ids = _write_train_source(
                        f, det, src, tids, n_cells, stage, make_frames, compression
                    )
                _write_metadata(f, ids, proposal, run, seq, stamp)
            files.append(path)
    if slow_data:
        for seq, start in enumerate(range(0, n_trains, sequence_trains)):
            tids = train_ids[start : start + sequence_trains]
            path = out / f"RAW-R{run:04d}-{slow_aggregator}-S{seq:05d}.h5"
            with h5py.File(path, "w") as f:
                _write_base_index(f, tids, stamp)
                ids = _write_slow(f, slow_data, tids, stamp)
                f.create_group("INSTRUMENT")
                _write_metadata(f, ids, proposal, run, seq, stamp)
            files.append(path)
    return RawRun(
        path=out,
        files=tuple(files),
        detector=det,
        karabo_id=karabo_id,
        sources={m: det.source(karabo_id, m) for m in mods},
        train_ids=train_ids,
        cell_ids=np.arange(n_cells),
        gain_stage=stage,
        truth=truths,
    )
