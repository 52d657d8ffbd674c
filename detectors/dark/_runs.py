"""The dark runs: checked before any work, then read one memory-cell block at a time.

Reading goes through EXtra-data's components only (`detectors.open_detector`). A block is
a range of frame positions within each train (`select_pulses` for XTDF detectors, a region
of the cells axis for JUNGFRAU), so a module of 352 cells × 500 trains never has to be in
memory whole: the exact median of a pixel needs all trains of its cell, not all cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from extra_data import DataCollection, by_index

from detectors import DetectorType, RawDataError, jungfrau_word, open_detector, open_run
from detectors import run_sources as find_sources
from detectors.dark.errors import DarkError, DarkInputError

__all__ = ["DarkRuns", "SUPPORTED", "GAIN_NAMES", "inspect_runs"]

#: detector types whose dark characterization this package runs, with their run count
SUPPORTED = {"AGIPD": 3, "JUNGFRAU": 3}
GAIN_NAMES = ("high", "medium", "low")
# pulseId step within a train -> AGIPD acquisition rate in MHz (EXtra's rule)
_RATE_BY_STEP = {1: 4.5, 2: 2.2, 4: 1.1, 9: 0.5}
_SAMPLE_TRAINS = 5


@dataclass
class DarkRuns:
    """The checked runs of one dark characterization; get one from ``inspect_runs``.

    ``cells`` holds the memory-cell id of each frame position within a train (the same
    in every run); ``evidence`` lists what the checks saw, for reports and runbooks.
    """

    detector: DetectorType
    karabo_id: str
    runs: tuple[int, ...]
    paths: tuple[Path, ...]
    modules: tuple[int, ...]
    cells: np.ndarray
    n_trains: tuple[int, ...]
    creation_date: datetime
    acquisition_rate: float | None
    evidence: list[str] = field(default_factory=list)
    _data: list[DataCollection] = field(default_factory=list, repr=False)

    @property
    def n_cells(self) -> int:
        return int(self.cells.size)

    def frame_bytes(self) -> int:
        """Bytes of one frame of one module (AGIPD: both planes)."""
        return int(np.prod(self.detector.raw.frame_shape)) * 2

    def read_block(self, run_index: int, module: int, positions: slice) -> np.ndarray:
        """One run's frames at ``positions`` within each train, ``[trains, cells, *frame]``.

        AGIPD frames are ``(2, x, y)`` (analog, digital); JUNGFRAU words carry the gain
        bits above the 14-bit ADC value, as the detector sends them.
        """
        data = self._data[run_index]
        try:
            comp = open_detector(data, self.detector, self.karabo_id, [module])
            if self.detector.raw.layout == "xtdf":
                return self._read_xtdf(comp, positions)
            return self._read_cells_axis(comp, positions)
        except RawDataError as exc:
            raise DarkInputError(f"run {self.runs[run_index]}: {exc}") from exc

    def _read_xtdf(self, comp: Any, positions: slice) -> np.ndarray:
        key = comp[self.detector.raw.data_key].select_pulses(by_index[positions])
        frames = key.ndarray()[0]
        n_pos = len(range(*positions.indices(self.n_cells)))
        n_trains = len(comp.train_ids)
        if frames.shape[0] != n_trains * n_pos:
            raise DarkInputError(
                f"{frames.shape[0]} frames for {n_trains} trains × {n_pos} cells: "
                "the run has incomplete trains"
            )
        return frames.reshape(n_trains, n_pos, *frames.shape[1:])

    def _read_cells_axis(self, comp: Any, positions: slice) -> np.ndarray:
        raw = self.detector.raw
        assert raw.gain_key is not None
        adc = comp[raw.data_key].ndarray(roi=(positions,))[0]
        bits = comp[raw.gain_key].ndarray(roi=(positions,))[0]
        return jungfrau_word(adc, bits)


def _open(path: Path, run: int, trains: int | None) -> DataCollection:
    if not path.is_dir():
        raise DarkInputError(f"run {run}: no run folder at {path}")
    try:
        data = open_run(path)
    except RawDataError as exc:
        raise DarkInputError(f"run {run}: {exc}") from exc
    if not len(data.train_ids):
        raise DarkInputError(f"run {run} at {path} holds no trains")
    if trains is not None:
        data = data.select_trains(by_index[:trains])
    return data


def _creation_date(data: DataCollection, run: int) -> datetime:
    """METADATA/creationDate (``20200723T070639Z``, UTC) as an aware datetime."""
    try:
        text = data.run_metadata()["creationDate"]
    except KeyError as exc:
        raise DarkInputError(f"run {run} has no METADATA/creationDate (format < 1.0?)") from exc
    try:
        return datetime.strptime(text, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise DarkInputError(f"run {run}: creationDate {text!r} is not YYYYmmddTHHMMSSZ") from exc


def _cell_pattern(det: DetectorType, data: DataCollection, karabo_id: str, module: int,
                  run: int) -> np.ndarray:
    """The memory-cell id of each frame position, checked to be the same in every train."""
    comp = open_detector(data, det, karabo_id, [module])
    if det.raw.layout == "xtdf":
        cells = np.asarray(comp[det.raw.data_key].cell_id_coordinates(), np.int64)
        n_trains = len(comp.train_ids)
        if n_trains == 0 or cells.size % n_trains:
            raise DarkInputError(
                f"run {run}: {cells.size} frames for {n_trains} trains; every train of a dark "
                "run must hold the same memory cells"
            )
        per_train = cells.reshape(n_trains, -1)
    else:
        assert det.raw.cell_key is not None
        per_train = np.asarray(comp[det.raw.cell_key].ndarray()[0], np.int64)
    if not (per_train == per_train[0]).all():
        raise DarkInputError(f"run {run}: the memory-cell order changes from train to train")
    pattern = per_train[0]
    if not np.array_equal(np.sort(pattern), np.arange(pattern.size)):
        raise DarkInputError(
            f"run {run}: memory cell ids {pattern.tolist()[:8]}... are not 0..{pattern.size - 1}"
        )
    return pattern


def _acquisition_rate(data: DataCollection, source: str) -> float | None:
    pulses = np.asarray(data[source, "image.pulseId"].select_trains(by_index[:1]).ndarray())
    steps = np.unique(np.diff(pulses.ravel().astype(np.int64)))
    if steps.size != 1:
        return None
    return _RATE_BY_STEP.get(int(steps[0]))


def _gain_stage_problem(det: DetectorType, stage: int, sample: np.ndarray, run: int,
                        levels: list[float]) -> str | None:
    """Why a run does not look like the dark of gain stage ``stage``, or None."""
    if det.name == "AGIPD":
        levels.append(float(np.median(sample[:, :, 1])))
        return None
    codes = det.gain.stage(sample)
    share = float(np.mean(codes == stage))
    levels.append(share)
    if share < 0.5:
        return (f"run {run}: only {share:.0%} of the sampled pixels are in the "
                f"{GAIN_NAMES[stage]} gain stage; is it the gain-{stage} dark?")
    return None


def inspect_runs(
    det: DetectorType,
    karabo_id: str | None,
    runs: Sequence[int],
    paths: Sequence[Path],
    *,
    modules: Sequence[int] | None = None,
    trains: int | None = None,
) -> DarkRuns:
    """Check that the runs exist and hold dark data of ``det``, one run per gain stage.

    Every problem found is reported together: missing folders, runs that EXtra-data cannot
    open, missing modules, differing memory cells, and runs whose digital values (AGIPD)
    or gain bits (JUNGFRAU) do not show the high, medium and low gain stages in order.
    """
    if det.name not in SUPPORTED:
        raise DarkError(
            f"dark characterization of {det.display_name} is not implemented here "
            f"(supported: {', '.join(SUPPORTED)})"
        )
    need = SUPPORTED[det.name]
    if len(runs) != need or len(paths) != need:
        raise DarkInputError(
            f"{det.display_name} darks need {need} runs (high, medium, low gain), "
            f"got {len(runs)}: {', '.join(map(str, runs))}"
        )
    if trains is not None and trains < 2:
        raise DarkInputError(f"--trains must be at least 2, not {trains}")
    problems: list[str] = []
    opened: list[DataCollection] = []
    found: list[dict[int, str]] = []
    for run, path in zip(runs, paths, strict=True):
        try:
            data = _open(Path(path), run, trains)
            found.append(find_sources(data, det, karabo_id))
            opened.append(data)
        except (DarkInputError, RawDataError) as exc:
            problems.append(str(exc) if isinstance(exc, DarkInputError) else f"run {run}: {exc}")
    if problems:
        raise DarkInputError("; ".join(problems))
    karabo_id = karabo_id or _karabo_id(det, found[0])
    common = sorted(set.intersection(*(set(f) for f in found)))
    wanted = sorted(modules) if modules is not None else common
    for run, f in zip(runs, found, strict=True):
        missing = [m for m in wanted if m not in f]
        if missing:
            problems.append(f"run {run} lacks module(s) "
                            f"{', '.join(det.karabo_da(m) for m in missing)}")
    if not wanted:
        problems.append(f"the runs have no {det.display_name} module in common")
    if problems:
        raise DarkInputError("; ".join(problems))
    return _check_content(det, karabo_id, runs, paths, opened, found, wanted)


def _karabo_id(det: DetectorType, sources: dict[int, str]) -> str:
    return next(iter(sources.values())).split("/", 1)[0]


def _check_content(det: DetectorType, karabo_id: str, runs: Sequence[int],
                   paths: Sequence[Path], opened: list[DataCollection],
                   found: list[dict[int, str]], modules: list[int]) -> DarkRuns:
    problems: list[str] = []
    first = modules[0]
    patterns = []
    for run, data in zip(runs, opened, strict=True):
        try:
            patterns.append(_cell_pattern(det, data, karabo_id, first, run))
        except (DarkInputError, RawDataError) as exc:
            problems.append(str(exc))
    if problems:
        raise DarkInputError("; ".join(problems))
    if any(not np.array_equal(p, patterns[0]) for p in patterns):
        sizes = ", ".join(f"run {r}: {p.size}" for r, p in zip(runs, patterns, strict=True))
        raise DarkInputError(f"the runs have different memory cells ({sizes})")
    n_trains = tuple(len(d.train_ids) for d in opened)
    dark = DarkRuns(det, karabo_id, tuple(runs), tuple(Path(p) for p in paths),
                    tuple(modules), patterns[0], n_trains, _creation_date(opened[0], runs[0]),
                    None, _data=opened)
    sample = slice(0, min(4, dark.n_cells))
    levels: list[float] = []
    for stage, (run, data) in enumerate(zip(runs, opened, strict=True)):
        small = DarkRuns(det, karabo_id, (run,), (Path(paths[stage]),), (first,), dark.cells,
                         (n_trains[stage],), dark.creation_date, None,
                         _data=[data.select_trains(by_index[:_SAMPLE_TRAINS])])
        problem = _gain_stage_problem(det, stage, small.read_block(0, first, sample), run, levels)
        if problem:
            problems.append(problem)
    if det.name == "AGIPD":
        shown = ", ".join(f"run {r}: {v:.0f}" for r, v in zip(runs, levels, strict=True))
        dark.evidence.append(f"digital level medians of {det.karabo_da(first)}: {shown}")
        if not levels[0] < levels[1] < levels[2]:
            problems.append(
                f"the digital values do not rise from run to run ({shown}): the runs must be "
                "the high, medium and low gain darks, in that order"
            )
        dark.acquisition_rate = _acquisition_rate(opened[0], found[0][first])
    else:
        shown = ", ".join(f"run {r}: {v:.0%}" for r, v in zip(runs, levels, strict=True))
        dark.evidence.append(f"pixels in the run's gain stage: {shown}")
    if problems:
        raise DarkInputError("; ".join(problems))
    dark.evidence.append(
        f"{len(modules)} module(s), {dark.n_cells} memory cell(s), trains {list(n_trains)}, "
        f"created {dark.creation_date.isoformat()}"
    )
    return dark
