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

Everything else (reversed or mixed bounds, a zero step, empty or unbalanced brackets, a
name with characters that no host name has) is a `HostPatternError` that says what is
wrong and where. A pattern that stands for more than MAX_HOSTS names is refused before
anything is expanded: `node[0-99999999]` is a typo, not a cluster.
"""

from __future__ import annotations

import itertools
import math
import re
import string

from .errors import RunbookError

__all__ = ["HostPatternError", "expand_hosts", "count_hosts", "MAX_HOSTS"]

MAX_HOSTS = 10_000
"""Host names that one pattern (or one group) may stand for."""
_MAX_DIGITS = 12
_SEPARATORS = re.compile(r"[-:]")
_HOST_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


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


def _is_number(text: str) -> bool:
    """ASCII digits only: `'²'.isdigit()` is true, and int() refuses it."""
    return text.isascii() and text.isdigit()


def _number(pattern: str, body: str, text: str) -> int:
    if len(text) > _MAX_DIGITS:
        raise _fail(pattern, f"'{text[:20]}...' in '[{body[:40]}]' has more than "
                    f"{_MAX_DIGITS} digits")
    return int(text)


_LETTERS = -1
"""The width of a letter range: its values are character codes."""
_Part = str | tuple[range, int]


def _parse_range(pattern: str, body: str) -> tuple[range, int]:
    """The numbers (or letter codes) of one bracket and their zero-padded width, not
    expanded."""
    if not body:
        raise _fail(pattern, "empty brackets '[]'")
    fields = _SEPARATORS.split(body)
    if len(fields) not in (2, 3):
        raise _fail(pattern, f"range '[{body}]' must be START-END or START:END:STEP")
    start, end = fields[0], fields[1]
    step_text = fields[2] if len(fields) == 3 else "1"
    if not _is_number(step_text):
        raise _fail(pattern, f"step '{step_text}' in '[{body}]' is not a positive integer")
    step = _number(pattern, body, step_text)
    if step == 0:
        raise _fail(pattern, f"step of '[{body}]' is zero")
    if start == "" and _is_number(end):
        start = "0"
    if _is_number(start) and _is_number(end):
        low, high = _number(pattern, body, start), _number(pattern, body, end)
        if low > high:
            raise _fail(pattern, f"range '[{body}]' is reversed ({low} > {high})")
        width = 0
        if len(start) > 1 and start.startswith("0"):
            width = len(start)
            if len(end) != width:
                raise _fail(pattern, f"padded start '{start}' and end '{end}' differ in width")
        return range(low, high + 1, step), width
    if _is_letter(start) and _is_letter(end):
        if start.islower() != end.islower():
            raise _fail(pattern, f"'[{body}]' mixes lower and upper case letters")
        if start > end:
            raise _fail(pattern, f"range '[{body}]' is reversed ('{start}' > '{end}')")
        return range(ord(start), ord(end) + 1, step), _LETTERS
    if (_is_number(start) and _is_letter(end)) or (_is_letter(start) and _is_number(end)):
        raise _fail(pattern, f"'[{body}]' mixes a number and a letter as bounds")
    raise _fail(pattern, f"bounds of '[{body}]' must be numbers or single letters")


def _parts(pattern: str) -> list[_Part]:
    if not pattern or any(c.isspace() for c in pattern):
        raise _fail(pattern, "a host name must be non-empty and contain no whitespace")
    return [_parse_range(pattern, p[0]) if isinstance(p, list) else p for p in _split(pattern)]


def _count(parts: list[_Part]) -> int:
    return math.prod(len(p[0]) for p in parts if isinstance(p, tuple))


def count_hosts(pattern: str) -> int:
    """How many names `pattern` stands for, without expanding it."""
    return _count(_parts(pattern))


def expand_hosts(pattern: str, limit: int = MAX_HOSTS) -> list[str]:
    """Every host name that `pattern` stands for, in order; the name itself if no range.

    More than `limit` names is an error, found before any name is made."""
    parts = _parts(pattern)
    total = _count(parts)
    if total > limit:
        raise _fail(pattern, f"it stands for {total:,} hosts, more than {limit:,}; "
                    "check the range's bounds")
    choices: list[list[str]] = []
    for part in parts:
        if isinstance(part, str):
            choices.append([part])
        elif part[1] == _LETTERS:
            choices.append([chr(c) for c in part[0]])
        else:
            choices.append([str(n).zfill(part[1]) for n in part[0]])
    names = ["".join(combo) for combo in itertools.product(*choices)]
    for name in names:
        if not _HOST_NAME.fullmatch(name):
            raise _fail(pattern, _why_not_a_name(name))
    return names


def _why_not_a_name(name: str) -> str:
    if name[:1] in (".", "-"):
        return f"'{name}' starts with '{name[0]}'; a host name starts with a letter or digit"
    bad = next(c for c in name if not (c.isascii() and (c.isalnum() or c in "_.-")))
    return f"{bad!r} cannot be in a host name (letters, digits, '_', '.' and '-' can)"
