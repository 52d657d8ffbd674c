"""Fuzzing the runbook loader (issue 12, hostile and broken input).

The project's own runbooks are mutated (keys deleted, values of the wrong type, unicode,
deep nesting, anchors and aliases, duplicated lines, cut-off files) and hostile YAML is
generated (alias bombs, deep nesting, huge files). Each file goes through the real loader
and validator with the real registry. Every case ends in success or in problems that
each start with `file:line:col:`; nothing else may escape, and nothing may hang.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine._yaml import load_yaml
from engine.errors import ValidationError
from engine.loader import REPO, load_catalog
from engine.registry import default_registry
from tests._fuzz import FUZZ, POSITION, dump, paths

pytestmark = pytest.mark.slow

CORPUS = sorted((REPO / "runbooks").rglob("*.yaml"))
TEXTS = [p.read_text() for p in CORPUS]
DATA = [load_yaml(p)[0] for p in CORPUS]
REGISTRY = default_registry()

WEIRD_TEXT = st.sampled_from([
    "", " ", "é", "Ω≈ç√", "\u202e", "\u200b", "😀", "名前", "\t", "a\nb", "{{", "}}",
    "{{ params.x }}", "{{ ''.__class__.__mro__ }}", "{% for %}", "~", "null", "yes", "0x1F",
    "1e999", "-", "*", "&", "!", "|", "'", '"', "#", "<<", "end", "x" * 5000,
])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=30), WEIRD_TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8) | WEIRD_TEXT, inner,
                                                 max_size=4)), max_leaves=12)








def _nested(depth: int, leaf: Any) -> Any:
    for i in range(depth):
        leaf = [leaf] if i % 2 else {"k": leaf}
    return leaf


@st.composite
def mutated_data(draw: st.DrawFn) -> str:
    """A corpus runbook, changed at a few places in its structure, dumped as YAML."""
    data = copy.deepcopy(draw(st.sampled_from(DATA)))
    for _ in range(draw(st.integers(1, 4))):
        places = paths(data)
        path = draw(st.sampled_from(places[1:] or places))
        if not path:
            break
        parent: Any = data
        for part in path[:-1]:
            parent = parent[part]
        key = path[-1]
        how = draw(st.sampled_from(["delete", "replace", "nest", "rename", "add"]))
        if how == "delete":
            del parent[key]
        elif how == "replace":
            parent[key] = draw(VALUES)
        elif how == "nest":
            parent[key] = _nested(draw(st.integers(1, 80)), parent[key])
        elif how == "rename" and isinstance(parent, dict):
            parent[draw(WEIRD_TEXT | st.text(min_size=1, max_size=10))] = parent.pop(key)
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(VALUES)
        else:
            parent.insert(key, draw(VALUES))
    return dump(data)


TEXT_EDITS = ["delete-line", "duplicate-line", "anchor-alias", "insert", "truncate", "tab",
              "merge", "tag", "indent"]


@st.composite
def mutated_text(draw: st.DrawFn) -> str:
    """A corpus runbook, edited as text: what a hurried hand or a bad merge does."""
    lines = draw(st.sampled_from(TEXTS)).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        edit = draw(st.sampled_from(TEXT_EDITS))
        line = lines[i]
        if edit == "delete-line":
            del lines[i]
        elif edit == "duplicate-line":
            lines.insert(draw(st.integers(0, len(lines))), line)
        elif edit == "anchor-alias" and ":" in line:
            name = draw(st.sampled_from(["a", "b", "x"]))
            key, _, value = line.partition(":")
            lines[i] = f"{key}: &{name}{value}" if draw(st.booleans()) else f"{key}: *{name}"
        elif edit == "insert":
            at = draw(st.integers(0, len(line)))
            lines[i] = line[:at] + draw(WEIRD_TEXT | st.text(max_size=5)) + line[at:]
        elif edit == "truncate":
            lines = lines[:i] + [line[: draw(st.integers(0, len(line)))]]
        elif edit == "tab":
            lines[i] = "\t" + line
        elif edit == "merge":
            lines.insert(i, line[: len(line) - len(line.lstrip())] + "<<: *a")
        elif edit == "tag":
            key, _, value = line.partition(":")
            tag = draw(st.sampled_from(["!!set", "!!omap", "!foo", "!!python/object:os.system",
                                        "!!binary", "!!int", "!!str", "!!timestamp"]))
            lines[i] = f"{key}: {tag}{value}"
        else:
            lines[i] = " " * draw(st.integers(1, 7)) + line
    return "\n".join(lines) + "\n"


@st.composite
def hostile_yaml(draw: st.DrawFn) -> str:
    """Documents made to hurt a loader: alias bombs, deep nesting, huge and odd files."""
    kind = draw(st.sampled_from(["bomb", "deep-flow", "deep-block", "recursive", "many-keys",
                                 "long-scalar", "documents", "control", "wide-merge"]))
    if kind == "bomb":
        width, depth = draw(st.integers(2, 12)), draw(st.integers(2, 12))
        lines = ["a0: &a0 [lol]"]
        for i in range(1, depth):
            lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
        return "\n".join(lines) + "\n"
    if kind == "deep-flow":
        n = draw(st.sampled_from([10, 63, 64, 65, 200, 10_000, 200_000]))
        return "id: x\nsteps: " + "[" * n + "]" * n + "\n"
    if kind == "deep-block":
        n = draw(st.integers(50, 300))
        return "".join(" " * i + f"k{i}:\n" for i in range(n)) + " " * n + "v\n"
    if kind == "recursive":
        return draw(st.sampled_from(["a: &x [*x]\n", "a: &x {b: *x}\n", "&x [*x]\n"]))
    if kind == "many-keys":
        n = draw(st.integers(1, 3_000))
        return "steps:\n" + "".join(f"  s{i}: {{finding: x, source: '1'}}\n" for i in range(n))
    if kind == "long-scalar":
        return "id: " + "x" * draw(st.integers(1, 3_000_000)) + "\n"
    if kind == "documents":
        return "id: a\n---\nid: b\n"
    if kind == "control":
        return "id: a" + draw(st.sampled_from(["\x00", "\x07", "\x1b", "\ufffe"])) + "\n"
    n = draw(st.integers(1, 200))
    return "".join(f"m{i}: &m{i} {{k{i}: v}}\n" for i in range(n)) + \
        "all:\n  <<: [" + ", ".join(f"*m{i}" for i in range(n)) + "]\n"


def _check(folder: Path, text: str | bytes) -> None:
    path = folder / "fuzz.yaml"
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_bytes(text)
    catalog = load_catalog([path], REGISTRY)
    for message in catalog.problems + catalog.warnings:
        m = POSITION.match(message)
        assert m, f"no file:line:col in {message!r}"
        assert m["file"].endswith("fuzz.yaml"), message
        assert int(m["line"]) >= 1 and int(m["col"]) >= 1, message
    try:
        catalog.raise_problems()
    except ValidationError:
        pass


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-runbooks")


def test_the_corpus_loads_cleanly(folder: Path) -> None:
    for text in TEXTS:
        _check(folder, text)


@FUZZ
@given(text=mutated_data())
def test_runbooks_with_mutated_structure(folder: Path, text: str) -> None:
    _check(folder, text)


@FUZZ
@given(text=mutated_text())
def test_runbooks_edited_as_text(folder: Path, text: str) -> None:
    _check(folder, text)


@FUZZ
@given(text=hostile_yaml())
def test_hostile_yaml_is_refused_at_a_position(folder: Path, text: str) -> None:
    _check(folder, text)


@FUZZ
@given(raw=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_bytes(folder: Path, raw: bytes) -> None:
    _check(folder, raw)


NAME = st.sampled_from(["params", "vars", "site", "instrument", "host", "value", "x", "_p",
                        "true", "none", "loop", "range", "in", "__class__", "items"])
SIMPLE_EXPRESSION = st.tuples(
    NAME, st.lists(st.one_of(NAME.map(lambda n: "." + n),
                             st.integers(0, 12).map(lambda i: f"[{i}]")), max_size=3),
    st.sampled_from(["", " ", "  "]),
).map(lambda t: "{{" + t[2] + t[0] + "".join(t[1]) + t[2] + "}}")
TEMPLATE_TEXT = st.lists(st.one_of(SIMPLE_EXPRESSION, st.sampled_from(
    ["/scratch/", "x", " ", "}}", "{", "{{ a + b }}", "{% if x %}y{% endif %}", "{#",
     "{{ a|join(',') }}", "{{- a }}"])), min_size=1, max_size=5).map("".join)


@FUZZ
@given(text=TEMPLATE_TEXT)
def test_the_quick_template_reading_agrees_with_jinja(text: str) -> None:
    """Validation reads dotted names without Jinja's parser; it must find the same."""
    from jinja2 import meta, nodes

    from engine import _templates_static as static

    quick = static._simple_facts(text)
    if quick is None:
        return
    ast = static._env.parse(text)
    assert quick.names == tuple(sorted(meta.find_undeclared_variables(ast)))
    assert quick.params == tuple(n.attr for n in ast.find_all(nodes.Getattr)
                                 if isinstance(n.node, nodes.Name) and n.node.name == "params")
    assert set(quick.private) == set(static._private(ast))
