"""Errors raised by the detector definitions and the raw-data readers.

They hang under `engine.errors.RunbookError`, so the CLI shows them as a message: an
unknown detector name or a bad operating condition is the user's to fix, not a bug.
"""

from __future__ import annotations

from engine.errors import RunbookError, TransportError

__all__ = ["DetectorError", "UnknownDetectorType", "ConditionsError", "RawDataError"]


class DetectorError(RunbookError):
    """Base of every detector-definition error."""


class UnknownDetectorType(DetectorError):
    """A detector type name that the registry does not know."""


class ConditionsError(DetectorError):
    """Operating-condition values that do not fit a detector type's parameters."""


class RawDataError(TransportError):
    """A raw run, source or key could not be found or read."""
