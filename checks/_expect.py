"""What a command's exit status and output must be: one model for every transport."""

from __future__ import annotations

import re

from pydantic import BaseModel

__all__ = ["OutputExpectation"]


class OutputExpectation(BaseModel):
    """Mixed into a command check's parameters (local.command, ssh.command)."""

    exit: int | None = 0
    stdout_contains: str | None = None
    stdout_matches: str | None = None
    stdout_lacks: str | None = None

    def problems(self, exit_status: int | None, out: str) -> list[str]:
        """Each way the result misses the expectation, in words; empty when it holds."""
        found = []
        if self.exit is not None and exit_status != self.exit:
            found.append(f"exit status {exit_status}, expected {self.exit}")
        if self.stdout_contains is not None and self.stdout_contains not in out:
            found.append(f"output lacks {self.stdout_contains!r}")
        if self.stdout_matches is not None and not re.search(self.stdout_matches, out,
                                                             re.MULTILINE):
            found.append(f"output does not match {self.stdout_matches!r}")
        if self.stdout_lacks is not None and self.stdout_lacks in out:
            found.append(f"output contains {self.stdout_lacks!r}")
        return found
