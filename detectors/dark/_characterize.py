"""One module's dark constants, computed one memory-cell block at a time.

The σ cuts of BadPixelsDark are taken per memory cell, and the offset of a pixel needs all
trains of its cell, so cutting a module by cells gives exactly the constants of one pass
over the whole module while holding only one block of the three runs in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detectors.dark._runs import DarkRuns
from detectors.dark.errors import DarkError
from kernels import (
    DarkConstants,
    KernelInputError,
    characterize_agipd_dark,
    characterize_jungfrau_dark,
)

__all__ = ["ModuleConstants", "cells_per_block", "characterize_module"]

DEFAULT_BLOCK_MIB = 2048.0


@dataclass(frozen=True)
class ModuleConstants:
    """A module's constants in the kernels' layout ``[gain, cell, x, y]`` (cells by id).

    ``by_calibration`` names them as CalCat does (``Offset``, ``Offset10Hz``...).
    """

    module: int
    constants: DarkConstants

    def by_calibration(self, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        c = self.constants
        out: dict[str, np.ndarray] = {}
        for name in names:
            if name.startswith("Offset"):
                out[name] = c.offset
            elif name.startswith("Noise"):
                out[name] = c.noise
            elif name.startswith("BadPixelsDark"):
                out[name] = c.bad_pixels
            elif name.startswith("ThresholdsDark") and c.thresholds is not None:
                out[name] = c.thresholds
            else:
                raise DarkError(f"no array for the calibration {name!r}")
        return out


def cells_per_block(runs: DarkRuns, max_block_mib: float = DEFAULT_BLOCK_MIB) -> int:
    """How many memory cells of the three runs fit in ``max_block_mib`` at once."""
    if max_block_mib <= 0:
        raise DarkError(f"the block size must be positive, not {max_block_mib} MiB")
    per_cell = sum(runs.n_trains) * runs.frame_bytes()
    return max(1, min(runs.n_cells, int(max_block_mib * 2**20 // per_cell)))


def _characterize(runs: DarkRuns, blocks: list[np.ndarray]) -> DarkConstants:
    try:
        if runs.detector.name == "AGIPD":
            return characterize_agipd_dark(blocks)
        return characterize_jungfrau_dark(blocks)
    except KernelInputError as exc:
        raise DarkError(f"the dark kernels refused the data: {exc}") from exc


def characterize_module(runs: DarkRuns, module: int, cells_in_block: int,
                        advance: Callable[[int], None] | None = None) -> ModuleConstants:
    """Offset, noise, bad pixels (and AGIPD thresholds) of one module, block by block.

    ``advance(n)`` is called after each block with its number of cells (a progress bar).
    """
    n = runs.n_cells
    order = runs.cells
    parts: list[tuple[np.ndarray, DarkConstants]] = []
    for start in range(0, n, cells_in_block):
        positions = slice(start, min(n, start + cells_in_block))
        blocks = [runs.read_block(i, module, positions) for i in range(len(runs.runs))]
        parts.append((order[positions], _characterize(runs, blocks)))
        del blocks
        if advance is not None:
            advance(positions.stop - positions.start)
    return ModuleConstants(module, _assemble(parts, n))


def _assemble(parts: list[tuple[np.ndarray, DarkConstants]], n_cells: int) -> DarkConstants:
    """Blocks -> one DarkConstants with the cell axis indexed by memory-cell id."""
    first = parts[0][1]

    def full(get: Callable[[DarkConstants], np.ndarray]) -> np.ndarray:
        sample = get(first)
        out = np.empty((sample.shape[0], n_cells, *sample.shape[2:]), sample.dtype)
        for cells, c in parts:
            out[:, cells] = get(c)
        return out

    thresholds = None
    if first.thresholds is not None:
        thresholds = full(lambda c: c.thresholds)  # type: ignore[arg-type,return-value]
    return DarkConstants(full(lambda c: c.offset), full(lambda c: c.noise),
                         full(lambda c: c.bad_pixels), thresholds, np.arange(n_cells))
