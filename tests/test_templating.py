from __future__ import annotations

import pytest

from engine.templating import TemplateProblem, render_value


def test_a_lone_expression_keeps_its_type():
    ctx = {"params": {"n": 3, "hosts": ["a", "b"]}}
    assert render_value("{{ params.n }}", ctx) == 3
    assert render_value(["{{ params.hosts }}", "x-{{ params.n }}"], ctx) == [["a", "b"], "x-3"]


@pytest.mark.parametrize("text", ["{{ nope }}", "a {{ params.missing }} b", "{{ params.x.y }}"])
def test_undefined_names_are_errors_that_say_where(text):
    with pytest.raises(TemplateProblem, match="rb.yaml:3:5: runbook 'rb', step 's'"):
        render_value(text, {"params": {"x": {}}}, "rb.yaml:3:5: runbook 'rb', step 's'")


def test_the_sandbox_refuses_unsafe_access():
    with pytest.raises(TemplateProblem):
        render_value("{{ ''.__class__.__mro__ }}", {})


def test_a_filter_that_raises_is_a_template_problem_not_a_traceback():
    from engine.templating import TemplateProblem, render, render_value

    with pytest.raises(TemplateProblem, match="step x: template error"):
        render("{{ params.parts | join(',') }}", {"params": {"parts": None}}, "step x")
    with pytest.raises(TemplateProblem, match="step y: template error"):
        render_value(["{{ 1 // params.n }}"], {"params": {"n": 0}}, "step y")
