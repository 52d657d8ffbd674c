"""Checks on values the walk already knows (parameters, inventory), for branching."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from engine.context import Context
from engine.registry import check
from engine.result import Result

__all__ = ["Compare", "value_compare"]


class Compare(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    value: Any
    equals: Any = None
    in_: list[Any] | None = Field(default=None, alias="in")
    empty: bool | None = None


@check("value.compare")
def value_compare(p: Compare, ctx: Context) -> Result:
    """ok when every given condition holds; a way to branch on a parameter."""
    problems = []
    if p.equals is not None and p.value != p.equals:
        problems.append(f"is not {p.equals!r}")
    if p.in_ is not None and p.value not in p.in_:
        problems.append(f"is not one of {p.in_!r}")
    if p.empty is not None and (not p.value) != p.empty:
        problems.append("is not empty" if p.empty else "is empty")
    evidence = f"value {p.value!r}" + (" " + ", ".join(problems) if problems else "")
    return Result.fail(evidence, value=p.value) if problems else Result.ok(evidence, value=p.value)
