"""The walker: routing, concurrency under a bound, timeouts, plan safety, confirmations."""

from __future__ import annotations

import json

import pytest

from engine.errors import PlanMismatch, RunbookError
from engine.plan import fingerprints, plan_document, verify_plan
from engine.registry import MutationRefused, mutations_allowed
from engine.walk import Walker

ROUTE = """\
id: route
title: Routing
kind: diagnosis
source: "10.2"
params:
  instrument: {type: instrument}
  outcome: {type: str}
start: probe
steps:
  probe:
    source: "10.2"
    check: test.sleep
    with: {seconds: 0, outcome: "{{ params.outcome }}"}
    timeout: 5
    on: {ok: went-ok, fail: went-fail, unknown: went-unknown}
  went-ok: {source: "10.2", finding: "ok route"}
  went-fail: {source: "10.2", finding: "fail route"}
  went-unknown: {source: "10.2", finding: "unknown route"}
"""


def walker(catalog, registry, site, mode="diagnose", **kw):
    return Walker(catalog, registry, site, mode=mode, instrument="LAB", **kw)


@pytest.mark.parametrize("outcome", ["ok", "fail", "unknown"])
def test_each_outcome_takes_its_route(write_runbook, load, registry, local_site, outcome):
    catalog = load(write_runbook("route.yaml", ROUTE).parent)
    report = walker(catalog, registry, local_site).walk(
        "route", {"instrument": "LAB", "outcome": outcome})
    assert [f.title for f in report.findings] == [f"{outcome} route"]
    assert report.findings[0].evidence[0]["step"] == "probe"
    assert report.steps[0].source == "10.2"
    assert (len(report.unknowns) == 1) == (outcome == "unknown")


ALL = """\
id: hypotheses
title: All at once
kind: diagnosis
source: "11.3"
params:
  instrument: {type: instrument}
  parties: {type: int, default: 4}
start: all
steps:
  all:
    source: "11.3"
    all: [h0, h1, h2, h3]
""" + "".join(f"""\
  h{i}:
    source: "11.3"
    check: test.barrier
    with: {{name: "{{{{ params.run }}}}-b", parties: "{{{{ params.parties }}}}", wait: 3}}
    on: {{ok: end, fail: f{i}, unknown: end}}
  f{i}: {{source: "11.3", finding: "hypothesis {i} failed"}}
""" for i in range(4)).replace("params.run", "params.tag")


def test_all_runs_its_branches_at_the_same_time(write_runbook, load, registry, local_site):
    text = ALL.replace("  parties:", "  tag: {type: str}\n  parties:")
    catalog = load(write_runbook("all.yaml", text).parent)
    report = walker(catalog, registry, local_site).walk(
        "hypotheses", {"instrument": "LAB", "tag": "together"})
    assert report.findings == []
    assert sorted(s.id for s in report.steps if s.kind == "check") == ["h0", "h1", "h2", "h3"]
    assert all(s.outcome == "ok" for s in report.steps if s.kind == "check")


def test_the_concurrency_bound_holds(write_runbook, load, registry, local_site):
    text = ALL.replace("  parties:", "  tag: {type: str}\n  parties:")
    catalog = load(write_runbook("all.yaml", text).parent)
    report = walker(catalog, registry, local_site, concurrency=2).walk(
        "hypotheses", {"instrument": "LAB", "tag": "bounded"})
    # with two at a time, four parties never meet: every branch reports its failure
    assert sorted(f.title for f in report.findings) == [
        f"hypothesis {i} failed" for i in range(4)]


def test_a_check_past_its_timeout_is_unknown(write_runbook, load, registry, local_site):
    text = ROUTE.replace("with: {seconds: 0,", "with: {seconds: 3,").replace(
        "timeout: 5", "timeout: 0.2")
    catalog = load(write_runbook("route.yaml", text).parent)
    report = walker(catalog, registry, local_site).walk(
        "route", {"instrument": "LAB", "outcome": "ok"})
    assert [f.title for f in report.findings] == ["unknown route"]
    assert report.unknowns[0].reason == "timed out after 0.2 s"
    assert report.exit_code == 1


def test_a_crashing_check_is_unknown_not_fatal(write_runbook, load, registry, local_site):
    text = ROUTE.replace("check: test.sleep", "check: test.crash").replace(
        'with: {seconds: 0, outcome: "{{ params.outcome }}"}', "with: {message: kaput}")
    catalog = load(write_runbook("route.yaml", text).parent)
    report = walker(catalog, registry, local_site).walk(
        "route", {"instrument": "LAB", "outcome": "ok"})
    assert "ValueError: kaput" in report.unknowns[0].reason


FOREACH = """\
id: fan
title: Fan out
kind: diagnosis
source: "11.2"
params:
  instrument: {type: instrument}
start: each
steps:
  each:
    source: "11.2"
    foreach: "{{ ['a', 'b', 'c'] }}"
    as: item
    do: probe
  probe:
    source: "11.2"
    check: local.command
    with: {argv: [test, "{{ item }}", "=", b]}
    subject: "host-{{ item }}"
    on: {ok: end, fail: not-b, unknown: end}
  not-b: {source: "11.2", finding: "{{ item }} is not b"}
"""


def test_foreach_reports_each_failing_subject(write_runbook, load, registry, local_site):
    catalog = load(write_runbook("fan.yaml", FOREACH).parent)
    report = walker(catalog, registry, local_site).walk("fan", {"instrument": "LAB"})
    assert sorted((f.title, f.subject) for f in report.findings) == [
        ("a is not b", "host-a"), ("c is not b", "host-c")]


def test_foreach_over_an_inventory_group(write_runbook, load, registry, local_site):
    text = FOREACH.replace("foreach: \"{{ ['a', 'b', 'c'] }}\"", "foreach: cal_restart").replace(
        '[test, "{{ item }}", "=", b]', '[test, "{{ item.account }}", "=", labonc]').replace(
        "host-{{ item }}", "{{ item.name }}")
    catalog = load(write_runbook("fan.yaml", text).parent)
    report = walker(catalog, registry, local_site).walk("fan", {"instrument": "LAB"})
    assert report.findings == []
    checks = [s for s in report.steps if s.kind == "check"]
    assert [(s.subject, s.outcome) for s in checks] == [("localhost", "ok")]


def _restart(tmp_path):
    from engine.loader import REPO
    return REPO / "runbooks" / "examples", {"instrument": "LAB",
                                            "state_file": str(tmp_path / "service")}


def test_plan_mode_changes_nothing(registry, local_site, tmp_path):
    from engine.loader import load_catalog
    folder, params = _restart(tmp_path)
    catalog = load_catalog([folder], registry)
    report = walker(catalog, registry, local_site, mode="plan").walk("local-restart", params)
    assert not (tmp_path / "service").exists()
    kinds = {s.id: (s.kind, s.outcome) for s in report.steps}
    assert kinds["restart"] == ("action", "planned")
    restart = next(s for s in report.steps if s.id == "restart")
    assert restart.resolved["danger"] is True
    assert restart.resolved["with"]["argv"][-1] == str(tmp_path / "service")
    # what a resume would ask, shown to the reviewer; the action's start is not known yet
    assert restart.resolved["postcondition"]["check"] == "local.command"
    assert restart.resolved["postcondition"]["with"]["argv"][-2:] == [
        str(tmp_path / "service"), "<when the action begins>"]
    # every route is resolved, including the failure branch
    assert {"before", "restart", "wait-active", "verify", "not-active"} <= set(kinds)


def test_an_action_called_outside_run_mode_raises(registry, tmp_path):
    from engine.context import Context
    entry = registry.get("test.touch")
    model = entry.model(path=str(tmp_path / "x"))
    ctx = Context(mode="plan", site="local", transport={})
    with pytest.raises(MutationRefused):
        entry.fn(model, ctx)
    assert not (tmp_path / "x").exists()
    token = mutations_allowed().set(True)
    try:
        entry.fn(model, ctx)
    finally:
        mutations_allowed().reset(token)
    assert (tmp_path / "x").read_text() == "touched"


def test_run_asks_before_danger_and_manual_steps(registry, local_site, tmp_path):
    from engine.loader import load_catalog
    folder, params = _restart(tmp_path)
    catalog = load_catalog([folder], registry)
    asked: list[str] = []

    def yes(question: str) -> bool:
        asked.append(question)
        return True
    report = walker(catalog, registry, local_site, mode="run", confirm=yes).walk(
        "local-restart", params)
    assert report.aborted is None and report.findings == []
    assert (tmp_path / "service").read_text().strip() == "ACTIVE"
    assert asked[0] == "Has the data source stopped?"
    assert asked[1].startswith("DANGER (3.4)")


def test_declining_a_danger_step_stops_before_it(registry, local_site, tmp_path):
    from engine.loader import load_catalog
    folder, params = _restart(tmp_path)
    catalog = load_catalog([folder], registry)
    answers = iter([True, False])
    report = walker(catalog, registry, local_site, mode="run",
                    confirm=lambda q: next(answers)).walk("local-restart", params)
    assert report.aborted == "declined danger step 'restart'"
    assert not (tmp_path / "service").exists()


def test_yes_skips_danger_prompts_but_not_manual_ones(registry, local_site, tmp_path):
    from engine.loader import load_catalog
    folder, params = _restart(tmp_path)
    catalog = load_catalog([folder], registry)
    asked: list[str] = []
    report = walker(catalog, registry, local_site, mode="run", yes=True,
                    confirm=lambda q: asked.append(q) or True).walk("local-restart", params)
    assert report.aborted is None
    assert asked == ["Has the data source stopped?"]


def test_a_plan_whose_inputs_changed_is_refused(registry, local_site, tmp_path, write_runbook):
    from engine.loader import load_catalog
    path = write_runbook("route.yaml", ROUTE)
    params = {"instrument": "LAB", "outcome": "ok"}
    catalog = load_catalog([path.parent], registry)
    report = walker(catalog, registry, local_site, mode="plan").walk("route", params)
    doc = json.loads(json.dumps(plan_document(
        report, fingerprints(catalog, local_site, "route", report.params, "LAB"))))
    verify_plan(doc, fingerprints(catalog, local_site, "route", report.params, "LAB"))
    path.write_text(path.read_text().replace("ok route", "OK route"))
    changed = load_catalog([path.parent], registry)
    with pytest.raises(PlanMismatch, match="the runbook changed"):
        verify_plan(doc, fingerprints(changed, local_site, "route", report.params, "LAB"))
    with pytest.raises(PlanMismatch, match="the params changed"):
        verify_plan(doc, fingerprints(catalog, local_site, "route",
                                      {**report.params, "outcome": "fail"}, "LAB"))
    doc["fingerprints"]["params"] = "0" * 64
    with pytest.raises(PlanMismatch, match="edited"):
        verify_plan(doc, fingerprints(catalog, local_site, "route", report.params, "LAB"))


def test_unresolved_inventory_name_names_runbook_step_and_variable(
        write_runbook, load, registry, local_site):
    text = ROUTE.replace('outcome: "{{ params.outcome }}"',
                         'outcome: "{{ instrument.devices.nothing_here }}"')
    catalog = load(write_runbook("route.yaml", text).parent)
    with pytest.raises(RunbookError) as info:
        walker(catalog, registry, local_site, mode="plan").walk(
            "route", {"instrument": "LAB", "outcome": "ok"})
    message = str(info.value)
    assert "runbook 'route', step 'probe'" in message
    assert "nothing_here" in message


def test_a_draft_cannot_be_walked(write_runbook, load, registry, local_site):
    text = ROUTE.replace('source: "10.2"\nparams:', 'source: "10.2"\nstatus: draft\nparams:', 1)
    catalog = load(write_runbook("route.yaml", text).parent)
    with pytest.raises(RunbookError, match="is a draft"):
        walker(catalog, registry, local_site).walk("route", {"instrument": "LAB",
                                                             "outcome": "ok"})


def test_retry_edges_are_bounded(write_runbook, load, registry, local_site):
    text = ROUTE.replace("on: {ok: went-ok, fail: went-fail, unknown: went-unknown}",
                         "on: {ok: went-ok, fail: {step: probe, max: 3}, unknown: went-unknown}"
                         ).replace('  went-fail: {source: "10.2", finding: "fail route"}\n', "")
    catalog = load(write_runbook("route.yaml", text).parent)
    assert catalog.problems == []
    report = walker(catalog, registry, local_site).walk(
        "route", {"instrument": "LAB", "outcome": "fail"})
    assert sum(s.id == "probe" and s.kind == "check" for s in report.steps) == 4
    assert report.steps[-1].outcome == "exhausted"


def test_params_outside_their_bounds_or_choices_are_refused(write_runbook, load, registry,
                                                            local_site):
    text = ROUTE.replace("  outcome: {type: str}",
                         "  outcome: {type: str, choices: [ok, fail]}\n"
                         "  n: {type: int, minimum: 0, maximum: 15, default: 3}")
    catalog = load(write_runbook("route.yaml", text).parent)
    assert catalog.problems == []
    walk = walker(catalog, registry, local_site)
    with pytest.raises(RunbookError, match=r"must be one of \['ok', 'fail'\], got 'maybe'"):
        walk.walk("route", {"instrument": "LAB", "outcome": "maybe"})
    with pytest.raises(RunbookError, match="must be at most 15, got 16"):
        walk.walk("route", {"instrument": "LAB", "outcome": "ok", "n": "16"})
    assert walk.walk("route", {"instrument": "LAB", "outcome": "ok", "n": "15"}).steps
