"""The runbook format: plain pydantic models, nothing that runs.

A runbook is a graph of named steps. Each step is one of eight kinds, told apart by the
key that names it (`check:`, `action:`, `wait:`, `manual:`, `finding:`, `call:`, `all:`,
`foreach:`). Unknown keys are errors, never skipped. Every runbook and step names the
guideline section that it encodes in `source:`.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

__all__ = [
    "END", "STEP_KINDS", "Route", "Param", "CheckStep", "ActionStep", "Postcondition", "WaitStep",
    "ManualStep", "FindingStep", "CallStep", "AllStep", "ForeachStep", "Step", "Runbook",
    "step_kind",
]

END = "end"
STEP_KINDS = ("check", "action", "wait", "manual", "finding", "call", "all", "foreach")

StepId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")]
Source = Annotated[str, Field(
    pattern=r"^\d+(\.\d+)*(#\d+)?$",
    description="guideline section (e.g. 11.1), or one of its bullets (11.1#2, the second)",
)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Retry(_Model):
    """An edge that may go back to an earlier step, at most `max` times."""

    step: StepId
    max: int = Field(ge=1, le=100)


Route = StepId | Retry


class Param(_Model):
    type: Literal["instrument", "str", "int", "float", "bool", "host", "list"] = "str"
    required: bool = True
    default: Any = None
    description: str = ""
    minimum: float | None = None      # int and float params: bounds, checked before a walk
    maximum: float | None = None
    choices: list[Any] | None = None


class _Step(_Model):
    source: Source
    title: str = ""
    description: str = ""


class CheckRoutes(_Model):
    ok: Route
    fail: Route
    unknown: Route


class CheckStep(_Step):
    """A read-only probe with three outcomes, each routed."""

    check: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: float = Field(default=30.0, gt=0, le=3600)
    subject: str | None = None
    on: CheckRoutes


class Postcondition(_Model):
    """A read-only check that is ok once the action's change is there. A resumed run asks
    it before repeating an action that began but was not seen to end; its `with:` may name
    `{{ started_at }}`, when that action began (Unix seconds)."""

    check: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: float = Field(default=30.0, gt=0, le=600)


class ActionStep(_Step):
    """A change to the facility; runs only in `run` mode."""

    action: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: float = Field(default=60.0, gt=0, le=3600)
    danger: bool = False
    subject: str | None = None
    postcondition: Postcondition | None = None
    next: Route = END


class WaitRoutes(_Model):
    ok: Route
    timeout: Route


class WaitStep(_Step):
    """Poll a check until it is ok or the timeout passes."""

    wait: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    timeout: float = Field(default=60.0, gt=0, le=3600)
    interval: float = Field(default=2.0, gt=0, le=600)
    subject: str | None = None
    on: WaitRoutes


class ManualStep(_Step):
    """A human instruction; `confirm` asks before going on."""

    manual: str
    confirm: str | None = None
    next: Route = END


class Fix(_Model):
    runbook: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class FindingStep(_Step):
    """A leaf: a cause, the evidence for it, and the documented remedy."""

    finding: str
    remedy: str = ""
    evidence: list[StepId] = Field(default_factory=list)
    contact: str | None = None
    fix: Fix | None = None
    severity: Literal["info", "warning", "error"] = "error"


class CallStep(_Step):
    call: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    next: Route = END


class AllStep(_Step):
    """Independent hypotheses: each branch runs concurrently, each finding is reported."""

    all: list[StepId] = Field(min_length=1)
    next: Route = END


class ForeachStep(_Step):
    """Fan a branch out over an inventory host group (or a list), with bounded concurrency."""

    foreach: str
    as_: str = Field(default="host", alias="as", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    do: StepId
    concurrency: int = Field(default=16, ge=1, le=1024)
    next: Route = END


def step_kind(value: Any) -> str | None:
    """The kind of a raw or parsed step: the one kind key that it has."""
    if isinstance(value, BaseModel):
        return _model_kind(type(value))
    if not isinstance(value, dict):
        return None
    kinds = [k for k in STEP_KINDS if k in value]
    return kinds[0] if len(kinds) == 1 else None


@functools.cache
def _model_kind(model: type[BaseModel]) -> str | None:
    return step_kind({k: True for k in model.model_fields})


def _tag(value: Any) -> str | None:
    kind = step_kind(value)
    return f"<{_MODELS[kind].__name__}>" if kind else None


_MODELS: dict[str, type[_Step]] = {
    "check": CheckStep, "action": ActionStep, "wait": WaitStep, "manual": ManualStep,
    "finding": FindingStep, "call": CallStep, "all": AllStep, "foreach": ForeachStep,
}

Step = Annotated[
    Annotated[CheckStep, Tag("<CheckStep>")]
    | Annotated[ActionStep, Tag("<ActionStep>")]
    | Annotated[WaitStep, Tag("<WaitStep>")]
    | Annotated[ManualStep, Tag("<ManualStep>")]
    | Annotated[FindingStep, Tag("<FindingStep>")]
    | Annotated[CallStep, Tag("<CallStep>")]
    | Annotated[AllStep, Tag("<AllStep>")]
    | Annotated[ForeachStep, Tag("<ForeachStep>")],
    Discriminator(
        _tag,
        custom_error_type="step_kind",
        custom_error_message="a step needs exactly one of: " + ", ".join(STEP_KINDS),
    ),
]


class Runbook(_Model):
    """One documented procedure or troubleshooting tree; get one from `engine.loader`."""

    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$")]
    title: str
    kind: Literal["diagnosis", "procedure"]
    source: Source
    status: Literal["ready", "draft"] = "ready"
    description: str = ""
    params: dict[str, Param] = Field(default_factory=dict)
    start: StepId
    steps: dict[StepId, Step] = Field(min_length=1)

    @field_validator("params")
    @classmethod
    def _param_names(cls, value: dict[str, Param]) -> dict[str, Param]:
        for name in value:
            if not name.isidentifier():
                raise ValueError(f"parameter name {name!r} is not an identifier")
        return value
