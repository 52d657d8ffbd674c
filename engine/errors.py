"""One root for every error that a user can cause or fix.

The CLI prints a RunbookError as its message and exits non-zero; anything else is a
bug and keeps its traceback.  Transports translate their library's exceptions into
these with ``raise ... from exc``.
"""

from __future__ import annotations

__all__ = ["RunbookError", "ValidationError", "TransportError", "PlanMismatch"]


class RunbookError(Exception):
    """Base of every error that the user can act on."""


class ValidationError(RunbookError):
    """A runbook, inventory or parameter file has problems; each is `file:line:col: msg`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class TransportError(RunbookError):
    """A host, broker, database or file could not be reached or read."""


class PlanMismatch(RunbookError):
    """A saved plan no longer matches the runbook, inventory or parameters."""
