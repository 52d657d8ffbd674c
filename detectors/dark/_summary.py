"""What the report needs from one module, small enough to pass between Slurm jobs.

Each module job writes one ``parts/<karabo_da>.npz`` into the report folder; the report is
rendered from those files alone, whether the modules ran in this process or on Maxwell.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detectors.dark.errors import DarkError
from kernels import BadPixels, DarkConstants

__all__ = ["Injection", "ModuleSummary", "summarize", "load_summaries", "write_json",
           "read_json", "PARTS"]

PARTS = "parts"
_BINS = 100


@dataclass(frozen=True)
class Injection:
    """One constant's fate: ``status`` is injected, taken (Version already taken) or skipped."""

    calibration: str
    status: str
    message: str
    version: int | None = None
    physical_name: str | None = None


@dataclass
class ModuleSummary:
    """Maps, histograms and bad-pixel fractions of one module; get one from ``summarize``."""

    module: int
    karabo_da: str
    label: str
    offset_map: np.ndarray
    noise_map: np.ndarray
    offset_hist: np.ndarray
    offset_edges: np.ndarray
    noise_hist: np.ndarray
    noise_edges: np.ndarray
    bad_fraction: float
    bad_by_flag: dict[str, float]
    injections: list[Injection] = field(default_factory=list)

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"module": self.module, "karabo_da": self.karabo_da, "label": self.label,
                "bad_fraction": self.bad_fraction, "bad_by_flag": self.bad_by_flag,
                "injections": [asdict(i) for i in self.injections]}
        path = folder / f"{self.karabo_da}.npz"
        tmp = folder / f".{self.karabo_da}.{os.getpid()}.npz"
        np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), offset_map=self.offset_map,
                            noise_map=self.noise_map, offset_hist=self.offset_hist,
                            offset_edges=self.offset_edges, noise_hist=self.noise_hist,
                            noise_edges=self.noise_edges)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Path) -> ModuleSummary:
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(str(f["meta"]))
                arrays = {k: f[k] for k in f.files if k != "meta"}
        except (OSError, KeyError, ValueError) as exc:
            raise DarkError(f"cannot read the module summary {path}: {exc}") from exc
        injections = [Injection(**i) for i in meta.pop("injections")]
        return cls(**meta, **arrays, injections=injections)


def _hist(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Counts per gain over the central 99.8 % of finite values, one shared bin set."""
    counts = []
    edges_all = []
    for g in range(values.shape[0]):
        v = values[g][np.isfinite(values[g])]
        lo, hi = (np.percentile(v, [0.1, 99.9]) if v.size else (0.0, 1.0))
        if hi <= lo:
            hi = lo + 1.0
        c, e = np.histogram(v, bins=_BINS, range=(lo, hi))
        counts.append(c)
        edges_all.append(e)
    return np.stack(counts), np.stack(edges_all)


def summarize(module: int, karabo_da: str, label: str, constants: DarkConstants,
              injections: list[Injection]) -> ModuleSummary:
    """Per gain: the offset and noise maps (median over cells) and their histograms."""
    offset_map = np.nanmedian(constants.offset, axis=1).astype(np.float32)
    noise_map = np.nanmedian(constants.noise, axis=1).astype(np.float32)
    o_hist, o_edges = _hist(constants.offset)
    n_hist, n_edges = _hist(constants.noise)
    bad = constants.bad_pixels
    by_flag = {}
    for flag in BadPixels:
        share = float(np.mean((bad & np.uint32(flag.value)) != 0))
        if share > 0:
            by_flag[str(flag.name)] = share
    return ModuleSummary(module, karabo_da, label, offset_map, noise_map, o_hist, o_edges,
                         n_hist, n_edges, float(np.mean(bad != 0)), by_flag, injections)


def load_summaries(report_dir: Path) -> list[ModuleSummary]:
    folder = report_dir / PARTS
    paths = sorted(folder.glob("*.npz"))
    if not paths:
        raise DarkError(f"no module results in {folder}: did the module jobs run?")
    return sorted((ModuleSummary.load(p) for p in paths), key=lambda s: s.module)


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DarkError(f"cannot read {path}: {exc}") from exc
    return data
