"""Host ranges: `spb-br-sys-cal-[0-7]` stands for eight host names.

The guidelines write host sets as ranges (section 11.1); the inventory keeps them that
way and expands them once, at load time, with this pure function. The syntax is
ansible's `expand_hostname_range`, with pdsh's `-` accepted next to ansible's `:`:

- `[START-END]` or `[START:END]`, both ends included; `[START:END:STEP]` with a step;
- numeric bounds keep the zero padding of START (`[01-12]` gives `01` .. `12`); a
  padded START needs an END of the same width, as in ansible;
- an empty START means 0, as in ansible (`[:3]` gives 0 .. 3);
- alphabetic bounds are single letters of the same case (`[a-c]`, `[A:C]`);
- several ranges in one name multiply, the leftmost varying slowest.

Everything else (reversed or mixed bounds, a zero step, empty or unbalanced brackets)
is a `HostPatternError` that says what is wrong and where.
"""

from __future__ import annotations

import itertools
import re
import string

from .errors import RunbookError

__all__ = ["HostPatternError", "expand_hosts"]

_SEPARATORS = re.compile(r"[-:]")


class HostPatternError(RunbookError, ValueError):
    """A host pattern cannot be expanded; the message names the pattern and the fault."""


def _fail(pattern: str, why: str) -> HostPatternError:
    return HostPatternError(f"bad host pattern '{pattern}': {why}")


def _split(pattern: str) -> list[str | list[str]]:
    """Literal text and range bodies, alternating: 'a[1-2]b' -> ['a', ['1-2'], 'b']."""
    parts: list[str | list[str]] = []
    pos = 0
    while pos < len(pattern):
        opening = pattern.find("[", pos)
        closing = pattern.find("]", pos)
        if closing != -1 and (opening == -1 or closing < opening):
            raise _fail(pattern, f"']' at column {closing + 1} has no matching '['")
        if opening == -1:
            parts.append(pattern[pos:])
            break
        end = pattern.find("]", opening + 1)
        if end == -1:
            raise _fail(pattern, f"'[' at column {opening + 1} is never closed")
        nested = pattern.find("[", opening + 1, end)
        if nested != -1:
            raise _fail(pattern, f"'[' at column {nested + 1} is nested inside a range")
        parts.append(pattern[pos:opening])
        parts.append([pattern[opening + 1 : end]])
        pos = end + 1
    return parts


def _is_letter(text: str) -> bool:
    return len(text) == 1 and text in string.ascii_letters


def _expand_range(pattern: str, body: str) -> list[str]:
    if not body:
        raise _fail(pattern, "empty brackets '[]'")
    fields = _SEPARATORS.split(body)
    if len(fields) not in (2, 3):
        raise _fail(pattern, f"range '[{body}]' must be START-END or START:END:STEP")
    start, end = fields[0], fields[1]
    step_text = fields[2] if len(fields) == 3 else "1"
    if not step_text.isdigit():
        raise _fail(pattern, f"step '{step_text}' in '[{body}]' is not a positive integer")
    step = int(step_text)
    if step == 0:
        raise _fail(pattern, f"step of '[{body}]' is zero")
    if start == "" and end.isdigit():
        start = "0"
    if start.isdigit() and end.isdigit():
        return _numeric(pattern, body, start, end, step)
    if _is_letter(start) and _is_letter(end):
        if start.islower() != end.islower():
            raise _fail(pattern, f"'[{body}]' mixes lower and upper case letters")
        if start > end:
            raise _fail(pattern, f"range '[{body}]' is reversed ('{start}' > '{end}')")
        return [chr(c) for c in range(ord(start), ord(end) + 1, step)]
    if (start.isdigit() and _is_letter(end)) or (_is_letter(start) and end.isdigit()):
        raise _fail(pattern, f"'[{body}]' mixes a number and a letter as bounds")
    raise _fail(pattern, f"bounds of '[{body}]' must be numbers or single letters")


def _numeric(pattern: str, body: str, start: str, end: str, step: int) -> list[str]:
    low, high = int(start), int(end)
    if low > high:
        raise _fail(pattern, f"range '[{body}]' is reversed ({low} > {high})")
    width = 0
    if len(start) > 1 and start.startswith("0"):
        width = len(start)
        if len(end) != width:
            raise _fail(pattern, f"padded start '{start}' and end '{end}' differ in width")
    return [str(n).zfill(width) for n in range(low, high + 1, step)]


def expand_hosts(pattern: str) -> list[str]:
    """Every host name that `pattern` stands for, in order; the name itself if no range."""
    if not pattern or any(c.isspace() for c in pattern):
        raise _fail(pattern, "a host name must be non-empty and contain no whitespace")
    choices: list[list[str]] = []
    for part in _split(pattern):
        if isinstance(part, list):
            choices.append(_expand_range(pattern, part[0]))
        else:
            choices.append([part])
    return ["".join(combo) for combo in itertools.product(*choices)]
