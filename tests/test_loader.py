"""Every user mistake in a runbook is reported at its file:line:col, all at once."""

from __future__ import annotations

import pytest

GOOD = """\
id: demo
title: Demo
kind: diagnosis
source: "10.2"
params:
  instrument: {type: instrument}
  folder: {type: str, default: /tmp}
start: first
steps:
  first:
    source: "10.2"
    check: local.command
    with: {argv: [ls, "{{ params.folder }}"]}
    on: {ok: end, fail: broken, unknown: end}
  broken:
    source: "10.2"
    finding: Broken
"""

CASES = [
    pytest.param(GOOD.replace("    source: \"10.2\"\n    check:",
                              "    source: \"10.2\"\n    chek_timeout: 3\n    check:"),
                 "demo.yaml:12:5: unknown key 'chek_timeout'", id="unknown-key"),
    pytest.param(GOOD.replace("fail: broken", "fail: brokn"),
                 "demo.yaml:14:19: step 'first' routes fail to unknown step 'brokn' "
                 "(did you mean 'broken'?)", id="unknown-step"),
    pytest.param(GOOD.replace("{ok: end, fail: broken, unknown: end}",
                              "{ok: end, fail: broken}"),
                 "demo.yaml:14:5: missing required key 'unknown' in steps.first.on",
                 id="unrouted-outcome"),
    pytest.param(GOOD.replace("    finding: Broken\n",
                              "    check: local.command\n    with: {argv: [ls]}\n"
                              "    on: {ok: first, fail: end, unknown: end}\n"),
                 "demo.yaml:10:3: cycle first -> broken -> first passes through no wait step "
                 "and no retry edge", id="cycle"),
    pytest.param(GOOD.replace("  folder: {type: str, default: /tmp}",
                              "  folder: {type: text, default: /tmp}"),
                 "demo.yaml:7:12: params.folder.type: Input should be 'instrument', 'str', 'int', "
                 "'float', 'bool', 'host' or 'list'", id="bad-param-type"),
    pytest.param(GOOD.replace("{{ params.folder }}", "{{ params.foldr }}"),
                 "demo.yaml:13:23: unresolved template variable 'params.foldr': runbook 'demo' "
                 "declares no such parameter (did you mean 'folder'?)", id="unresolved-param"),
    pytest.param(GOOD.replace("{{ params.folder }}", "{{ instrumnt.name }}"),
                 "demo.yaml:13:23: unresolved template variable 'instrumnt' "
                 "(did you mean 'instrument'?)", id="unresolved-root"),
    pytest.param(GOOD + "  broken:\n    source: \"10.2\"\n    finding: Again\n",
                 "demo.yaml:18:3: duplicate key 'broken'", id="duplicate-step-id"),
    pytest.param(GOOD.replace("check: local.command", "check: local.comand"),
                 "demo.yaml:12:5: unknown check 'local.comand' (did you mean 'local.command'?)",
                 id="unknown-check"),
    pytest.param(GOOD.replace("{argv: [ls, \"{{ params.folder }}\"]}", "{argv: [ls], timeot: 3}"),
                 "demo.yaml:13:24: unknown key 'timeot' (did you mean 'timeout'?)",
                 id="check-param-unknown"),
    pytest.param(GOOD.replace("{argv: [ls, \"{{ params.folder }}\"]}", "{argv: [ls], exit: zero}"),
                 "demo.yaml:13:24: exit: Input should be a valid integer", id="check-param-type"),
    pytest.param(GOOD.replace("  broken:\n", "  orphan:\n    source: \"1\"\n    finding: x\n"
                              "  broken:\n"),
                 "demo.yaml:15:3: step 'orphan' cannot be reached from start 'first'",
                 id="unreachable"),
    pytest.param(GOOD.replace("source: \"10.2\"\nparams", "source: ten\nparams"),
                 "demo.yaml:4:1: source: String should match pattern", id="bad-source"),
    pytest.param(GOOD.replace("    finding: Broken\n", "    finding: Broken\n    manual: Also\n"),
                 "demo.yaml:15:3: steps.broken: a step needs exactly one of", id="two-kinds"),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_problem_is_reported_at_its_position(write_runbook, load, text, expected):
    path = write_runbook("demo.yaml", text)
    catalog = load(path.parent)
    rendered = [p.replace(str(path), "demo.yaml") for p in catalog.problems]
    assert any(expected in p for p in rendered), rendered


def test_good_runbook_has_no_problem(write_runbook, load):
    catalog = load(write_runbook("demo.yaml", GOOD).parent)
    assert catalog.problems == []
    assert list(catalog.runbooks) == ["demo"]


def test_problems_from_several_files_are_collected(write_runbook, load):
    write_runbook("a.yaml", GOOD.replace("fail: broken", "fail: nowhere"))
    write_runbook("b.yaml", GOOD.replace("id: demo", "id: other").replace(
        "check: local.command", "check: nope.nope"))
    catalog = load(write_runbook("c.yaml", "id: [unclosed\n").parent)
    assert len(catalog.problems) >= 3
    assert {p.split(":")[0].rsplit("/", 1)[-1] for p in catalog.problems} == {
        "a.yaml", "b.yaml", "c.yaml"}


def test_duplicate_runbook_ids_name_both_files(write_runbook, load):
    write_runbook("a.yaml", GOOD)
    catalog = load(write_runbook("b.yaml", GOOD).parent)
    assert any("duplicate runbook id 'demo'" in p and "a.yaml:1:1" in p
               for p in catalog.problems), catalog.problems


def test_call_checks_target_and_param_types(write_runbook, load):
    write_runbook("demo.yaml", GOOD)
    caller = GOOD.replace("id: demo", "id: caller").replace(
        "    finding: Broken\n",
        "    call: demo\n    with: {folder: 3}\n")
    catalog = load(write_runbook("caller.yaml", caller).parent)
    assert any("parameter 'folder' of 'demo' is str, got int 3" in p for p in catalog.problems)
    catalog = load(write_runbook("caller.yaml", caller.replace("call: demo", "call: dem")).parent)
    assert any("unknown runbook 'dem' (did you mean 'demo'?)" in p for p in catalog.problems)


def test_draft_reports_unknown_names_as_warnings(write_runbook, load):
    draft = GOOD.replace("kind: diagnosis", "kind: diagnosis\nstatus: draft").replace(
        "check: local.command", "check: future.device_state")
    catalog = load(write_runbook("demo.yaml", draft).parent)
    assert catalog.problems == []
    assert any("unknown check 'future.device_state'" in w and "draft" in w
               for w in catalog.warnings)


def test_diagnosis_may_not_hold_an_action(write_runbook, load):
    text = GOOD.replace("    finding: Broken\n", "    action: local.run\n    with: {argv: [ls]}\n")
    catalog = load(write_runbook("demo.yaml", text).parent)
    assert any("a diagnosis never changes anything" in p for p in catalog.problems)


def test_the_shipped_runbooks_validate(registry):
    from engine.loader import default_paths, load_catalog
    catalog = load_catalog(default_paths(), registry)
    assert catalog.problems == []
    assert {"no-online-data", "restart-online", "local-disk", "local-restart"} <= set(
        catalog.runbooks)


def test_lazy_positions_are_those_of_a_full_parse():
    """The loader parses a runbook without positions and finds them when a problem asks;
    every path then has the position that a full parse gives."""
    from engine import _yaml
    from engine.loader import REPO

    for path in sorted((REPO / "runbooks").rglob("*.yaml"))[:12]:
        full_data, full = _yaml.load_yaml(path, path.name)
        data, lazy = _yaml.load_yaml(path, path.name, lazy=True)
        assert data == full_data
        assert dict.__len__(lazy) == 0          # nothing parsed for positions yet
        assert all(lazy.at(key) == pos for key, pos in full.items()), path
        assert dict(lazy) == dict(full)
