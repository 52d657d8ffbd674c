"""Raw runs read through EXtra-data, never through hand-written HDF5 walks.

Multi-module detectors go through EXtra-data's components (`AGIPD1M`, `LPD1M`,
`DSSC1M`, `JUNGFRAU`), which align modules by train; single-module cameras through
the run's source data.  EXtra-data's exceptions become `RawDataError` here, with the
sources that the run does have, so that a runbook can say what is missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from extra_data import DataCollection, RunDirectory, by_index, components
from extra_data.exceptions import PropertyNameError, SourceNameError

from detectors.errors import RawDataError
from detectors.gain import jungfrau_word
from detectors.model import DetectorType
from detectors.registry import get_detector_type

__all__ = ["ModuleFrames", "open_run", "run_sources", "open_detector", "read_dark_module"]


class ModuleFrames(NamedTuple):
    """One module's frames, frames first.

    `data` holds raw uint16 words, (frames, *frame) where frame is (2, rows, cols) for
    AGIPD (analog, digital) and (rows, cols) otherwise; for JUNGFRAU the gain bits are
    put back above the ADC value, as the detector sends them.  `cell_ids` and
    `train_ids` give each frame's memory cell and train.
    """

    data: np.ndarray
    cell_ids: np.ndarray
    train_ids: np.ndarray


def open_run(run_dir: Path | str | DataCollection) -> DataCollection:
    """The run at `run_dir` as an EXtra-data collection."""
    if isinstance(run_dir, DataCollection):
        return run_dir
    try:
        return RunDirectory(str(run_dir))
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise RawDataError(f"cannot open raw run {run_dir}: {exc}") from exc
    except OSError as exc:
        raise RawDataError(f"cannot read raw run {run_dir}: {exc}") from exc


def _source_pattern(detector: DetectorType) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)(?::[^}]*)?\}", detector.raw.source_template)
    regex = ""
    for i, part in enumerate(parts):
        if i % 2 == 0:
            regex += re.escape(part)
        elif part == "karabo_id":
            regex += r"(?P<karabo_id>[^/]+)"
        else:
            regex += r"(?P<module>\d+)"
    return re.compile(regex + "$")


def run_sources(
    run_dir: Path | str | DataCollection,
    detector: str | DetectorType,
    karabo_id: str | None = None,
) -> dict[int, str]:
    """Module number -> raw source, for the modules of `detector` found in the run.

    Without `karabo_id`, the run must hold exactly one instance of the detector type.
    """
    det = get_detector_type(detector)
    data = open_run(run_dir)
    pattern = _source_pattern(det)
    found: dict[str, dict[int, str]] = {}
    for source in sorted(data.instrument_sources):
        m = pattern.match(source)
        if m is None or not _has_frame_shape(data, det, source):
            continue
        module = int(m["module"]) if "module" in m.groupdict() else det.raw.first_module
        found.setdefault(m["karabo_id"], {})[module] = source
    if karabo_id is None:
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise RawDataError(
                f"expected one {det.display_name} in the run, found {names}; pass karabo_id"
            )
        karabo_id = next(iter(found))
    if karabo_id not in found:
        raise RawDataError(
            f"no {det.display_name} sources for {karabo_id!r} in the run "
            f"(instrument sources: {', '.join(sorted(data.instrument_sources)) or 'none'})"
        )
    return dict(sorted(found[karabo_id].items()))


def _has_frame_shape(data: DataCollection, det: DetectorType, source: str) -> bool:
    """Whether a source's frames have this type's shape.

    AGIPD, LPD and DSSC share the XTDF source naming, so only the frame shape tells
    an LPD module from an AGIPD module.
    """
    if det.raw.data_key not in data[source]:
        return False
    entry = data[source, det.raw.data_key].entry_shape
    if det.raw.cells_axis:
        entry = entry[1:]
    return tuple(entry) == det.raw.frame_shape


def _component_class(det: DetectorType, karabo_id: str) -> Any:
    if det.component is None:
        raise RawDataError(f"{det.display_name} has no EXtra-data component; read its source")
    if det.name == "AGIPD" and "AGIPD500K" in karabo_id:
        return components.AGIPD500K
    return getattr(components, det.component)


def open_detector(
    run_dir: Path | str | DataCollection,
    detector: str | DetectorType,
    karabo_id: str,
    modules: list[int] | None = None,
) -> Any:
    """The EXtra-data component (AGIPD1M, LPD1M, DSSC1M, JUNGFRAU) over the raw data."""
    det = get_detector_type(detector)
    data = open_run(run_dir)
    cls = _component_class(det, karabo_id)
    try:
        return cls(data, detector_name=karabo_id, modules=modules, raw=True)
    except (SourceNameError, ValueError) as exc:
        raise RawDataError(
            f"cannot open {det.display_name} {karabo_id!r} modules {modules}: {exc}"
        ) from exc


def read_dark_module(
    run_dir: Path | str | DataCollection,
    detector: str | DetectorType,
    module: int,
    karabo_id: str | None = None,
    trains: slice | None = None,
) -> ModuleFrames:
    """All frames of one module of a dark run, with cell and train ids per frame.

    `trains` (a slice over the run's trains) reads a block at a time, so that a long
    dark run is characterized in parts instead of being held whole in memory.
    """
    det = get_detector_type(detector)
    det.check_module(module)
    data = open_run(run_dir)
    if trains is not None:
        data = data.select_trains(by_index[trains])
        if not len(data.train_ids):
            raise RawDataError(f"train selection {trains} is empty for this run")
    sources = run_sources(data, det, karabo_id)
    if module not in sources:
        raise RawDataError(
            f"module {module} ({det.karabo_da(module)}) is not in the run; "
            f"present: {', '.join(det.karabo_da(m) for m in sources)}"
        )
    if karabo_id is None:
        karabo_id = _karabo_id_of(det, sources[module])
    try:
        if det.raw.layout == "xtdf":
            return _read_xtdf(det, data, karabo_id, module)
        if det.raw.cells_axis:
            return _read_cells_axis(det, data, karabo_id, module)
        return _read_camera(det, data, sources[module])
    except (SourceNameError, PropertyNameError) as exc:
        raise RawDataError(f"{det.display_name} module {module}: {exc}") from exc


def _karabo_id_of(det: DetectorType, source: str) -> str:
    m = _source_pattern(det).match(source)
    assert m is not None
    return m["karabo_id"]


def _read_xtdf(
    det: DetectorType, data: DataCollection, karabo_id: str, module: int
) -> ModuleFrames:
    comp = open_detector(data, det, karabo_id, [module])
    image = comp[det.raw.data_key]
    frames = image.ndarray()[0]
    return ModuleFrames(
        frames,
        np.asarray(image.cell_id_coordinates()).astype(np.int64),
        np.asarray(image.train_id_coordinates()).astype(np.uint64),
    )


def _read_cells_axis(
    det: DetectorType, data: DataCollection, karabo_id: str, module: int
) -> ModuleFrames:
    comp = open_detector(data, det, karabo_id, [module])
    adc = comp[det.raw.data_key].ndarray()[0]
    n_trains, n_cells = adc.shape[:2]
    assert det.raw.cell_key is not None and det.raw.gain_key is not None
    cells = comp[det.raw.cell_key].ndarray()[0].reshape(-1).astype(np.int64)
    bits = comp[det.raw.gain_key].ndarray()[0]
    words = jungfrau_word(adc, bits).reshape(n_trains * n_cells, *adc.shape[2:])
    train_ids = np.repeat(np.asarray(comp.train_ids, dtype=np.uint64), n_cells)
    return ModuleFrames(words, cells, train_ids)


def _read_camera(det: DetectorType, data: DataCollection, source: str) -> ModuleFrames:
    kd = data[source, det.raw.data_key]
    frames = kd.ndarray()
    train_ids = np.asarray(kd.train_id_coordinates(), dtype=np.uint64)
    return ModuleFrames(frames, np.zeros(len(frames), np.int64), train_ids)
