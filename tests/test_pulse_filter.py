"""The pulse filter of 11.6 ("range(0,250,2)", "0,2,4,5,6"): a small grammar, never eval.

A table from the guidelines and the twin's uses, then hypothesis: expressions built from
the grammar must give what Python's own `range` gives, and any text at all must give a
list or a PulseFilterError, never another exception, and quickly however large the range.
"""

from __future__ import annotations

import builtins
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks import pipeline
from engine.errors import RunbookError
from engine.pulse_filter import MAX_PULSES, PulseFilterError, parse_pulse_filter

FUZZ = settings(max_examples=2000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize(("text", "count"), [
    pytest.param("range(128)", 128, id="guidelines-safe-setting"),
    pytest.param("range(0,250,2)", 125, id="guidelines-stride"),
    pytest.param("0,2,4,5,6", 5, id="guidelines-list"),
    pytest.param("range(0, 10), 20, 21", 12, id="mixed"),
    pytest.param("[1, 2, 2]", 2, id="brackets-and-duplicates"),
    pytest.param("range(0, 1000)", 352, id="clipped-to-cells"),
    pytest.param("range(0, 999999999999)", 352, id="huge-stop-costs-nothing"),
    pytest.param("range(-5, 5)", 5, id="negative-start-selects-from-zero"),
    pytest.param("range(10, -10, -3)", 4, id="descending"),
    pytest.param("  range ( 3 ) , 7  ", 4, id="spaces"),
])
def test_pulse_filter_expressions_11_6(text: str, count: int) -> None:
    assert len(parse_pulse_filter(text, cells=352)) == count


@pytest.mark.parametrize(("text", "message"), [
    pytest.param("", "empty", id="empty"),
    pytest.param("range(", "expected an integer, found the end at column 7", id="open"),
    pytest.param("0,,2", "found ',' at column 3", id="empty-element"),
    pytest.param("range(0,10,0)", "step is zero", id="zero-step"),
    pytest.param("__import__('os').system('touch pwned')", "found '__import__' at column 1",
                 id="python-code"),
    pytest.param("eval('1')", "found 'eval'", id="eval"),
    pytest.param("-3", "negative pulse index -3", id="negative-index"),
    pytest.param("range(10**3)", "expected ')', found '*'", id="arithmetic"),
    pytest.param("range(9999999999999)", "more than 12 digits", id="too-many-digits"),
    pytest.param("١,٢", "found '١'", id="arabic-digits"),
    pytest.param("1 2", "unexpected '2' at column 3", id="missing-comma"),
])
def test_anything_else_is_refused_with_its_column(text: str, message: str) -> None:
    with pytest.raises(PulseFilterError, match=re.escape(message)):
        parse_pulse_filter(text)


def test_the_error_is_a_runbook_error_and_a_value_error() -> None:
    with pytest.raises(RunbookError):
        parse_pulse_filter("nope")
    with pytest.raises(ValueError):
        parse_pulse_filter("nope")


def test_the_check_uses_the_same_parser() -> None:
    assert pipeline.parse_pulse_filter is parse_pulse_filter
    assert pipeline.PulseFilterError is PulseFilterError


def test_eval_is_never_called(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("eval called")

    monkeypatch.setattr(builtins, "eval", refuse)
    monkeypatch.setattr(builtins, "exec", refuse)
    assert len(parse_pulse_filter("range(0,250,2), 251")) == 126


SMALL = st.integers(-3000, 3000)
RANGES = st.one_of(
    st.tuples(SMALL), st.tuples(SMALL, SMALL),
    st.tuples(SMALL, SMALL, st.integers(-50, 50).filter(bool)))
ITEMS = st.lists(st.one_of(st.integers(0, 3000), RANGES), min_size=1, max_size=6)


def _text(items: list[int | tuple[int, ...]], bracket: bool, space: str) -> str:
    parts = [str(i) if isinstance(i, int) else "range(" + f",{space}".join(map(str, i)) + ")"
             for i in items]
    body = f",{space}".join(parts)
    return f"[{body}]" if bracket else body


@pytest.mark.slow
@FUZZ
@given(items=ITEMS, bracket=st.booleans(), space=st.sampled_from(["", " ", "  "]),
       cells=st.none() | st.integers(1, 4000))
def test_expressions_select_what_python_range_selects(items, bracket, space, cells) -> None:
    limit = min(cells, MAX_PULSES) if cells is not None else MAX_PULSES
    expected: set[int] = set()
    for item in items:
        expected |= {item} if isinstance(item, int) else set(range(*item))
    got = parse_pulse_filter(_text(items, bracket, space), cells)
    assert got == sorted(i for i in expected if 0 <= i < limit)


TOKENS = st.sampled_from(["range", "(", ")", ",", "[", "]", "-", "+", "0", "7", "250",
                          "999999999999999", " ", "\t", "x", "eval", "__import__", "'", "*",
                          "·", "٣", "\x00", "\n"])


@pytest.mark.slow
@FUZZ
@given(text=st.one_of(st.lists(TOKENS, max_size=20).map("".join), st.text(max_size=40)),
       cells=st.none() | st.integers(-5, 10**9))
def test_any_text_gives_pulses_or_a_pulse_filter_error(text: str, cells: int | None) -> None:
    try:
        got = parse_pulse_filter(text, cells)
    except PulseFilterError as exc:
        assert "column" in str(exc) or "empty" in str(exc)
        return
    assert got == sorted(set(got))
    assert all(0 <= i < MAX_PULSES for i in got)
    assert cells is None or all(i < cells for i in got)
