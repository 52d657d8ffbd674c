"""Comparing a device's value with what a runbook expects, as an operator reads it."""

from __future__ import annotations

import re
from typing import Any

__all__ = ["numeric", "same", "expectation_problems"]


def numeric(value: Any) -> float | None:
    """A number, from a number or a numeric string (table cells are strings); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def same(value: Any, want: Any) -> bool:
    """Equality as an operator means it: 352 == "352", True == "true", "a " == "a"."""
    if isinstance(want, bool) or isinstance(value, bool):
        return str(value).strip().lower() == str(want).strip().lower()
    a, b = numeric(value), numeric(want)
    if a is not None and b is not None:
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    if isinstance(value, list) or isinstance(want, list):
        return value == want
    return str(value).strip() == str(want).strip()


def expectation_problems(value: Any, *, equals: Any = None, in_: list[Any] | None = None,
                         at_least: float | None = None, at_most: float | None = None,
                         not_empty: bool | None = None, matches: str | None = None
                         ) -> list[str]:
    """What is wrong with ``value``; ValueError when a bound meets a non-number."""
    problems = []
    if equals is not None and not same(value, equals):
        problems.append(f"expected {equals!r}")
    if in_ is not None and not any(same(value, w) for w in in_):
        problems.append(f"expected one of {in_!r}")
    if at_least is not None or at_most is not None:
        number = numeric(value)
        if number is None:
            raise ValueError("not a number, so it cannot be compared with a bound")
        if at_least is not None and number < at_least:
            problems.append(f"expected at least {at_least:g}")
        if at_most is not None and number > at_most:
            problems.append(f"expected at most {at_most:g}")
    if not_empty is not None:
        empty = value is None or (isinstance(value, str | list | dict) and not
                                  (value.strip() if isinstance(value, str) else value))
        if not_empty and empty:
            problems.append("expected a value, it is empty")
        if not not_empty and not empty:
            problems.append("expected it to be empty")
    if matches is not None and not re.search(matches, str(value)):
        problems.append(f"does not match {matches!r}")
    return problems
