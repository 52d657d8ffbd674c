"""Hostile and broken input (issue 12): what a careless or malicious file or value does.

Template injection from a runbook and from a site, YAML made to hurt a loader (alias
bombs, deep nesting, control characters, huge files), host ranges too large to expand,
and values that cannot reach a remote shell as literals. Each is refused with a
RunbookError that says where and why; none may crash, hang or run anything.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from checks._ssh import SshPool, SshSettings, UnsafeCommand, command_line
from checks._ssh_script import name_problem
from checks.ssh import SshCommand
from engine import _yaml
from engine.errors import RunbookError, ValidationError
from engine.hosts import MAX_HOSTS, HostPatternError, expand_hosts
from engine.inventory import load_site
from engine.loader import load_catalog
from engine.registry import default_registry
from engine.templating import TemplateProblem, render, render_value

MRO = "{{ ''.__class__.__mro__ }}"

RUNBOOK = """\
id: hostile
title: Hostile
kind: diagnosis
source: "10.2"
params:
  instrument: {type: instrument}
start: first
steps:
  first:
    source: "10.2"
    check: local.command
    with: {argv: [echo, "%s"]}
    on: {ok: end, fail: end, unknown: end}
"""


def _problems(folder: Path, text: str) -> list[str]:
    path = folder / "hostile.yaml"
    path.write_text(text)
    return load_catalog([path], default_registry()).problems


# ---- template injection -------------------------------------------------------------------

@pytest.mark.parametrize("template", [
    pytest.param(MRO, id="mro"),
    pytest.param("{{ params.x.__class__ }}", id="dunder-of-a-param"),
    pytest.param("{{ ''['__class__'] }}", id="subscript"),
    pytest.param("{{ ''|attr('__class__') }}", id="attr-filter"),
    pytest.param("x{{ instrument._private }}", id="private"),
])
def test_runbook_template_injection_is_refused_at_its_position(tmp_path, template):
    problems = _problems(tmp_path, RUNBOOK % template)
    assert problems and all(re.match(r"\S*hostile\.yaml:12:\d+: ", p) for p in problems), \
        problems
    assert "private attribute" in problems[0] and "sandbox" in problems[0]


def test_runbook_template_syntax_nested_too_deep_is_a_problem_not_a_crash(tmp_path):
    problems = _problems(tmp_path, RUNBOOK % ("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}"))
    assert problems and re.match(r"\S*hostile\.yaml:12:\d+: template", problems[0]), problems


@pytest.mark.parametrize("template", [
    MRO, "x {{ ''.__class__ }} y", "{{ cycler.__init__.__globals__ }}",
    "{{ ''|attr('__class__') }}", "{{ self.__init__ }}",
])
def test_the_sandbox_refuses_it_when_rendered_and_says_where(template):
    where = "runbooks/x.yaml:12:5: runbook 'x', step 'first'"
    for call in (render, render_value):
        with pytest.raises(TemplateProblem, match=re.escape(where) + ".*unsafe"):
            call(template, {}, where)


@pytest.mark.parametrize("template", [
    pytest.param("{{ 'x' * 10**9 }}", id="huge-string"),
    pytest.param("{{ [1] * 10**8 }}", id="huge-list"),
    pytest.param("{{ 7 ** 100000000 }}", id="huge-number"),
    pytest.param("{{ range(10**9)|list }}", id="huge-range"),
    pytest.param("{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}", id="deep"),
])
@pytest.mark.timeout(30)
def test_templates_that_would_hang_or_exhaust_are_refused(template):
    with pytest.raises(TemplateProblem, match="step s: template error"):
        render_value(template, {}, "step s")


@pytest.mark.parametrize("name", ["values", "items", "keys", "get", "pop"])
def test_a_parameter_named_like_a_dict_method_is_the_parameter(name):
    ctx = {"params": {name: ["a", "b"]}}
    assert render_value(f"{{{{ params.{name} }}}}", ctx) == ["a", "b"]
    assert render(f"{{{{ params.{name}|join(',') }}}}", ctx) == "a,b"


def test_inventory_values_are_data_never_rendered_again():
    ctx = {"vars": {"x": MRO, "y": "{{ 7 * 7 }}"}}
    assert render_value("{{ vars.x }}", ctx) == MRO
    assert render("a {{ vars.y }} b", ctx) == "a {{ 7 * 7 }} b"


def _site(root: Path, body: str) -> None:
    (root / "evil").mkdir(parents=True)
    (root / "evil" / "site.yaml").write_text(textwrap.dedent(body))


def test_inventory_template_injection_is_refused_at_its_position(tmp_path, monkeypatch):
    _site(tmp_path, f"""\
        site: evil
        vars:
          karabo_root: "/scratch/{{{{ account }}}}/karabo"
          sneaky: "{MRO}"
        instruments:
          SPB:
            sase: 1
            karabo: {{gui_server: g, broker: b, topic: t}}
            groups:
              cal: {{hosts: [h1], vars: {{account: "{{{{ ''.__class__ }}}}"}}}}
        """)
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path))
    with pytest.raises(ValidationError) as info:
        load_site("evil")
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert re.match(r"\S*evil/site\.yaml:4:3: template reads the private attribute "
                    "'__class__'", problems[0]), problems
    assert re.match(r"\S*evil/site\.yaml:10:\d+: template reads", problems[1]), problems


# ---- YAML made to hurt a loader -----------------------------------------------------------

def _bomb(levels: int = 12, width: int = 10) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("text", "where", "why"), [
    pytest.param(_bomb(), ":5:", "aliases expand to more than", id="billion-laughs"),
    pytest.param("a: &x [*x]\n", ":1:8:", "recursive alias", id="recursive-alias"),
    pytest.param("a: *nope\n", ":1:4:", "no anchor defined", id="unknown-alias"),
    pytest.param("a: " + "[" * 200_000 + "]" * 200_000 + "\n", ":1:", "nested more than",
                 id="deep-flow"),
    pytest.param("".join(" " * i + f"k{i}:\n" for i in range(100)), ":65:",
                 "nested more than", id="deep-block"),
    pytest.param("a: b\x00c\n", ":1:5:", "U+0000", id="nul"),
    pytest.param("a: 1\nb: \x1b[31m\n", ":2:4:", "control character", id="escape"),
    pytest.param("a: 1\n---\na: 2\n", ":2:1:", "second YAML document", id="two-documents"),
    pytest.param("a: !!python/object/apply:os.system [touch pwned]\n", ":1:4:",
                 "not supported", id="python-tag"),
    pytest.param("a: !!set {x}\n", ":1:4:", "not supported", id="set-tag"),
    pytest.param("a: !!int\n", ":1:4:", "cannot read", id="empty-int"),
    pytest.param("a: " + "9" * 5000 + "\n", ":1:4:", "cannot read", id="5000-digit-int"),
    pytest.param("a: 2024-13-45\n", ":1:4:", "cannot read", id="bad-date"),
    pytest.param("? [1, 2]\n: x\n", ":1:3:", "plain value", id="collection-key"),
    pytest.param("a: 1\nb: 2\na: 3\n", ":3:1:", "duplicate key 'a' (first at line 1)",
                 id="duplicate-key"),
    pytest.param("x: 1\n<<: 5\n", ":2:5:", "merge", id="bad-merge"),
])
@pytest.mark.timeout(30)
def test_hostile_yaml_is_refused_at_its_position(tmp_path, text, where, why):
    path = tmp_path / "evil.yaml"
    path.write_text(text)
    with pytest.raises(ValidationError) as info:
        _yaml.load_yaml(path, "evil.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("evil.yaml" + where), problem
    assert why in problem, problem


def test_a_file_past_the_size_limit_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(_yaml, "MAX_BYTES", 1000)
    path = tmp_path / "huge.yaml"
    path.write_text("a: " + "x" * 2000 + "\n")
    with pytest.raises(ValidationError, match=r"^huge\.yaml:1:1: larger than"):
        _yaml.load_yaml(path, "huge.yaml")


def test_bytes_that_are_not_utf8_are_refused_at_their_position(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ValidationError, match=r"^latin1\.yaml:2:7: not UTF-8"):
        _yaml.load_yaml(path, "latin1.yaml")


def test_anchors_merges_and_aliases_that_are_fine_still_load(tmp_path):
    path = tmp_path / "ok.yaml"
    path.write_text("base: &b {x: 1, y: [2, 3]}\nc:\n  <<: *b\n  y: 4\nd: *b\n")
    data, positions = _yaml.load_yaml(path, "ok.yaml")
    assert data == {"base": {"x": 1, "y": [2, 3]}, "c": {"x": 1, "y": 4},
                    "d": {"x": 1, "y": [2, 3]}}
    data["d"]["y"].append(9)
    assert data["base"]["y"] == [2, 3]      # an alias is a copy, never shared
    assert str(positions.at(("c", "y"))) == "ok.yaml:4:3"


# ---- host ranges -------------------------------------------------------------------------

@pytest.mark.parametrize(("pattern", "why"), [
    pytest.param("node[0-99999999]", "stands for 100,000,000 hosts", id="huge"),
    pytest.param("n[0-9][0-9][0-9][0-9][0-9]", "stands for 100,000 hosts", id="product"),
    pytest.param("n[0-" + "9" * 40 + "]", "more than 12 digits", id="forty-digits"),
    pytest.param("n[9-0]", "reversed", id="reversed"),
    pytest.param("n[٠-٩]", "numbers or single letters", id="arabic-digits"),
    pytest.param("spb;rm-[0-1]", "';' cannot be in a host name", id="shell"),
    pytest.param("-oProxyCommand=x", "starts with '-'", id="option"),
])
@pytest.mark.timeout(30)
def test_host_ranges_that_cannot_be_hosts_are_refused_unexpanded(pattern, why):
    with pytest.raises(HostPatternError, match=re.escape(why)):
        expand_hosts(pattern)


def test_a_site_with_a_huge_range_fails_at_its_position(tmp_path, monkeypatch):
    _site(tmp_path, """\
        site: evil
        instruments:
          SPB:
            sase: 1
            karabo: {gui_server: g, broker: b, topic: t}
            groups:
              cal: {hosts: ["spb-br-sys-cal-[0-99999999]"]}
              many: {hosts: ["a[0-9999]", "b[0-9999]"]}
        """)
    monkeypatch.setenv("RUNBOOK_INVENTORY_PATH", str(tmp_path))
    with pytest.raises(ValidationError) as info:
        load_site("evil")
    first, second = info.value.problems
    assert re.match(r"\S*evil/site\.yaml:7:\d+: .*stands for 100,000,000 hosts", first)
    assert re.match(rf"\S*evil/site\.yaml:8:\d+: .*more than {MAX_HOSTS:,} hosts", second)


# ---- values for a remote shell -------------------------------------------------------------

def test_a_nul_byte_cannot_become_part_of_a_command():
    with pytest.raises(UnsafeCommand, match="NUL byte"):
        command_line(["echo", "a\0; touch pwned"])
    pool = SshPool(SshSettings())
    try:
        with pytest.raises(UnsafeCommand, match="NUL byte"):
            pool.run("spb-br-sys-cal-0", "spbonc", "echo 'a\0b'")
        with pytest.raises(UnsafeCommand, match="NUL byte"):
            pool.run_many("spb-br-sys-cal-0", "spbonc", ["true", "echo 'a\0b'"])
        assert pool.stats["commands"] == 0
    finally:
        pool.close()
    assert issubclass(UnsafeCommand, RunbookError)


@pytest.mark.parametrize("value", [
    "SPB; rm -rf x", "$(touch pwned)", "`touch pwned`", "a\nb", "-oProxyCommand=touch x",
    "h'x", "h x", "", ".hidden", "a@b",
])
def test_host_and_account_must_be_plain_names(value):
    assert name_problem("host", value)
    assert name_problem("account", value)
    with pytest.raises(ValueError, match="is not a plain host name"):
        SshCommand(host=value or "x y", argv=["true"])
    with pytest.raises(ValueError, match="is not a plain account name"):
        SshCommand(host="h", user=value or "x y", argv=["true"])


@pytest.mark.parametrize("value", ["spb-br-sys-cal-0", "max-exfl016.desy.de", "127.0.1.5",
                                   "::1", "xcal", "spb_onc"])
def test_plain_names_and_addresses_pass(value):
    assert name_problem("host", value) is None


def test_without_the_c_parser_the_same_limits_hold(tmp_path, monkeypatch):
    from ruamel.yaml import YAML

    from engine import _yaml_tree

    monkeypatch.setattr(_yaml_tree, "_yaml", YAML(typ="safe", pure=True))
    path = tmp_path / "pure.yaml"
    path.write_text("a: &x {b: [1, 2.5, true, null, '3']}\nc: *x\n")
    data, positions = _yaml.load_yaml(path, "pure.yaml")
    assert data == {"a": {"b": [1, 2.5, True, None, "3"]}, "c": {"b": [1, 2.5, True, None, "3"]}}
    assert str(positions.at(("a", "b", 1))) == "pure.yaml:1:15"
    path.write_text(_bomb())
    with pytest.raises(ValidationError, match="alias bomb"):
        _yaml.load_yaml(path, "pure.yaml")
