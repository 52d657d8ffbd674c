"""The pulse filter of the online pipeline (guidelines 11.6), read by a small grammar.

The CAL_MANAGER's *Filter pulses* accepts "range expressions, but also lists", e.g.
``0,2,4,5,6`` or ``range(0,250,2)``. The text comes from a device, so it is parsed here
and never given to `eval`::

    filter := "[" items "]" | items
    items  := item ("," item)*
    item   := INT | "range" "(" INT ["," INT ["," INT]] ")"
    INT    := ["+" | "-"] DIGIT+            (at most MAX_DIGITS digits)

`range` means what Python's does. The result is the sorted, unique pulse indices: those
below zero or at or beyond `cells` (MAX_PULSES, the pulses of one train, when not given)
select nothing and are left out, computed without iterating, so ``range(10**12)`` costs no
more than ``range(128)``. Anything else is a `PulseFilterError` naming the column.
"""

from __future__ import annotations

import bisect
import re

from .errors import RunbookError

__all__ = ["PulseFilterError", "parse_pulse_filter", "MAX_PULSES", "MAX_DIGITS"]

MAX_PULSES = 2700
"""Pulses in one European XFEL train (4.5 MHz for 600 us): no index beyond selects one."""
MAX_DIGITS = 12

_TOKEN = re.compile(r"\s*(?:(?P<int>[+-]?[0-9]+)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
                    r"|(?P<sym>[()\[\],])|(?P<bad>\S))")


class PulseFilterError(RunbookError, ValueError):
    """A pulse filter that is neither range() expressions nor a list of integers."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, column) per token, then ("end", "", column)."""
    out = []
    at = 0
    while True:
        m = _TOKEN.match(text, at)
        if m is None:           # only whitespace is left
            break
        kind = m.lastgroup or "bad"
        out.append((kind, m.group(kind), m.start(kind) + 1))
        at = m.end()
    out.append(("end", "", len(text.rstrip()) + 1))
    return out


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def fail(self, why: str) -> PulseFilterError:
        column = self.tokens[self.at][2]
        shown = self.text if len(self.text) <= 60 else self.text[:57] + "..."
        return PulseFilterError(f"{why} at column {column} of {shown!r}")

    def peek(self) -> tuple[str, str, int]:
        return self.tokens[self.at]

    def take(self, kind: str, text: str | None = None) -> str:
        got_kind, got, _ = self.tokens[self.at]
        if got_kind != kind or (text is not None and got != text):
            wanted = f"'{text}'" if text else {"int": "an integer"}.get(kind, kind)
            found = "the end" if got_kind == "end" else f"'{got}'"
            raise self.fail(f"expected {wanted}, found {found}")
        self.at += 1
        return got

    def integer(self) -> int:
        digits = self.take("int")
        if len(digits.lstrip("+-")) > MAX_DIGITS:
            self.at -= 1
            raise self.fail(f"a number of more than {MAX_DIGITS} digits")
        return int(digits)


def _item(reader: _Reader, limit: int, selected: set[int]) -> None:
    kind, text, _ = reader.peek()
    if kind == "int":
        value = reader.integer()
        if value < 0:
            reader.at -= 1
            raise reader.fail(f"negative pulse index {value}")
        if value < limit:
            selected.add(value)
        return
    if kind != "name" or text != "range":
        found = "the end" if kind == "end" else f"'{text}'"
        raise reader.fail(f"expected an integer or range(...), found {found}")
    reader.take("name", "range")
    reader.take("sym", "(")
    args = [reader.integer()]
    while len(args) < 3 and reader.peek()[1] == ",":
        reader.take("sym", ",")
        args.append(reader.integer())
    reader.take("sym", ")")
    if len(args) == 3 and args[2] == 0:
        raise reader.fail("range() step is zero")
    numbers = range(*args)
    if numbers.step < 0:
        numbers = numbers[::-1]
    low = bisect.bisect_left(numbers, 0)
    high = bisect.bisect_left(numbers, limit)
    selected.update(numbers[low:high])


def parse_pulse_filter(text: str, cells: int | None = None) -> list[int]:
    """Sorted unique pulse indices selected by ``text``, below ``cells`` when given."""
    limit = min(cells, MAX_PULSES) if cells is not None else MAX_PULSES
    reader = _Reader(text)
    if reader.peek()[0] == "end":
        raise PulseFilterError("the pulse filter is empty")
    bracket = reader.peek()[1] == "["
    if bracket:
        reader.take("sym", "[")
    selected: set[int] = set()
    _item(reader, limit, selected)
    while reader.peek()[1] == ",":
        reader.take("sym", ",")
        _item(reader, limit, selected)
    if bracket:
        reader.take("sym", "]")
    if reader.peek()[0] != "end":
        raise reader.fail(f"unexpected '{reader.peek()[1]}'")
    return sorted(selected)
