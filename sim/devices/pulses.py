"""The pulse filter of the online pipeline (11.6): range expressions and lists, no eval.

Accepted: ``range(128)``, ``range(0, 250, 2)``, ``0,2,4,5,6`` and any comma-separated mix
of these (``range(0,10), 20, 21``).  Anything else is an error naming the bad part.
"""

from __future__ import annotations

import re

__all__ = ["parse_pulse_filter", "PulseFilterError"]

_RANGE = re.compile(r"range\(\s*(-?\d+)\s*(?:,\s*(-?\d+)\s*)?(?:,\s*(-?\d+)\s*)?\)")


class PulseFilterError(ValueError):
    """A pulse filter expression that is neither a range() nor a list of integers."""


def _split_top(text: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise PulseFilterError(f"unbalanced ')' in {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth:
        raise PulseFilterError(f"unbalanced '(' in {text!r}")
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_pulse_filter(text: str, cells: int | None = None) -> list[int]:
    """Sorted unique pulse indices selected by ``text`` (clipped to ``cells`` if given)."""
    text = text.strip()
    if not text:
        raise PulseFilterError("empty pulse filter")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    selected: set[int] = set()
    for part in _split_top(text):
        if not part:
            raise PulseFilterError(f"empty element in {text!r}")
        if part.lstrip("-").isdigit():
            value = int(part)
            if value < 0:
                raise PulseFilterError(f"negative pulse index {value}")
            selected.add(value)
            continue
        m = _RANGE.fullmatch(part)
        if m is None:
            raise PulseFilterError(f"not a range() or an integer: {part!r}")
        a, b, c = m.groups()
        start, stop, step = (0, int(a), 1) if b is None else (int(a), int(b), int(c or 1))
        if step == 0:
            raise PulseFilterError(f"range step is zero in {part!r}")
        selected.update(i for i in range(start, stop, step) if i >= 0)
    if cells is not None:
        selected = {i for i in selected if i < cells}
    return sorted(selected)
