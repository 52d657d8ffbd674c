"""Errors of the calibration-constant DB, each one a RunbookError the user can act on.

The names follow what the facility shows: "Version already taken" (section 12.2) and
"Resource temporarily unavailable" (section 11.3) are the messages an operator greps
for, so the messages keep those words.
"""

from __future__ import annotations

from engine.errors import RunbookError, TransportError

__all__ = [
    "CalDBError",
    "BadRequest",
    "UnknownName",
    "ConstantNotFound",
    "VersionTaken",
    "CalDBUnreachable",
]


class CalDBError(RunbookError):
    """Root of the errors that the calibration DB reports about a request."""


class BadRequest(CalDBError):
    """The request itself is malformed: a naive time, an unknown strategy, no conditions."""


class UnknownName(CalDBError):
    """A detector, PDU, module, calibration or parameter name that the DB does not know."""


class ConstantNotFound(CalDBError):
    """No deployed, good-quality version matches the detector, conditions and time."""


class VersionTaken(CalDBError):
    """The same PDU, calibration, start date and operating conditions were injected before.

    Section 12.2: not a failure of the DB but a refusal to overwrite; check that the
    right data was characterized with the right conditions.
    """


class CalDBUnreachable(TransportError):
    """No access point or REST endpoint answered in time."""
