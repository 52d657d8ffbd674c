"""What a check or action returns, and what a walk reports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["Outcome", "Result", "StepRecord", "Finding", "Unknown", "Report"]

Outcome = Literal["ok", "fail", "unknown"]


class Result(BaseModel):
    """The answer of one check or action: build one with `Result.ok(...)` and friends."""

    model_config = ConfigDict(extra="forbid")

    outcome: Outcome
    observed: dict[str, Any] = Field(default_factory=dict)
    evidence: str = ""
    reason: str = ""
    subject: str | None = None

    @classmethod
    def ok(cls, evidence: str = "", **observed: Any) -> Result:
        return cls(outcome="ok", evidence=evidence, observed=observed)

    @classmethod
    def fail(cls, evidence: str = "", **observed: Any) -> Result:
        return cls(outcome="fail", evidence=evidence, observed=observed)

    @classmethod
    def unknown(cls, reason: str, evidence: str = "", **observed: Any) -> Result:
        return cls(outcome="unknown", reason=reason, evidence=evidence, observed=observed)


class StepRecord(BaseModel):
    """One step as the walk met it: its outcome, evidence, subject, duration, source."""

    id: str
    kind: str
    source: str
    outcome: str
    subject: str | None = None
    observed: dict[str, Any] = Field(default_factory=dict)
    evidence: str = ""
    reason: str = ""
    duration: float = 0.0
    resolved: dict[str, Any] = Field(default_factory=dict)
    branch: str = ""
    at: float | None = None
    replayed: bool = False  # a resumed run took it from the journal; not done again


class Finding(BaseModel):
    id: str
    title: str
    source: str
    subject: str | None = None
    evidence: list[dict[str, Any]] = Field(default_factory=list)
    remedy: str = ""
    contact: str | None = None
    fix: dict[str, Any] | None = None
    severity: str = "error"
    runbook: str = ""


class Unknown(BaseModel):
    id: str
    subject: str | None = None
    reason: str
    source: str = ""
    runbook: str = ""


class Report(BaseModel):
    """Everything one walk produced, in the order the steps finished."""

    runbook: str
    mode: str
    instrument: str | None = None
    site: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRecord] = Field(default_factory=list)
    findings: list[Finding] = Field(default_factory=list)
    unknowns: list[Unknown] = Field(default_factory=list)
    aborted: str | None = None
    started: float | None = None
    finished: float | None = None

    @property
    def exit_code(self) -> int:
        if self.aborted:
            return 1
        if self.findings:
            return 1
        return 2 if self.unknowns else 0
