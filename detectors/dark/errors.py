"""Errors of the dark characterization, each one a RunbookError that says what to do."""

from __future__ import annotations

from engine.errors import RunbookError, TransportError

__all__ = ["DarkError", "DarkInputError", "SlurmError"]


class DarkError(RunbookError):
    """The dark characterization cannot go on (bad runs, bad options, unknown detector)."""


class DarkInputError(DarkError):
    """The runs are missing, unreadable, or do not hold the dark data that was asked for."""


class SlurmError(TransportError):
    """``sbatch`` is not installed, or no Slurm controller accepted the job."""
