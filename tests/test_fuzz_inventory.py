"""Fuzzing the inventory loader (issue 12, hostile and broken input).

Host ranges are generated from their grammar and its near misses (`[9-0]`, `[0-99999999]`,
unicode digits, unbalanced brackets), and the project's own sites are mutated in their
structure and as text. Every case ends in a loaded site or in a ValidationError whose
problems each start with `file:line:col:`; a huge range is refused, never expanded.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine._yaml import load_yaml
from engine.errors import ValidationError
from engine.hosts import MAX_HOSTS, HostPatternError, count_hosts, expand_hosts
from engine.inventory import REPO_ROOT, load_site
from tests._fuzz import FUZZ, POSITION, dump, paths

pytestmark = pytest.mark.slow

SITES = REPO_ROOT / "inventory"
XFEL = {p.name: load_yaml(p)[0] for p in sorted((SITES / "xfel").glob("*.yaml"))}
TEXTS = {p.name: p.read_text() for p in sorted((SITES / "xfel").glob("*.yaml"))}
LOCAL = load_yaml(SITES / "local" / "site.yaml")[0]

NUMBER = st.one_of(st.integers(0, 20).map(str), st.integers(0, 10**30).map(str),
                   st.sampled_from(["", "0", "00", "007", "99999999", "٣", "²", "-1", "1.5",
                                    " 1", "0x1"]))
BOUND = NUMBER | st.sampled_from(list("aAzZ")) | st.text(max_size=3)
BODY = st.one_of(
    st.tuples(BOUND, st.sampled_from(["-", ":"]), BOUND).map("".join),
    st.tuples(BOUND, st.sampled_from(["-", ":"]), BOUND, st.sampled_from(["-", ":"]),
              NUMBER).map("".join),
    st.text(max_size=6),
)
LITERAL = st.one_of(st.sampled_from(["spb-br-sys-cal-", "node", "x", "", ".", "-", "a.b",
                                     "h;rm -rf x", "$(touch pwned)", "é", "a b", "["]),
                    st.text(max_size=5))


@st.composite
def host_patterns(draw: st.DrawFn) -> str:
    parts = [draw(LITERAL)]
    for _ in range(draw(st.integers(0, 3))):
        parts.append("[" + draw(BODY) + "]")
        parts.append(draw(LITERAL))
    if draw(st.integers(0, 9)) == 0:
        parts.append(draw(st.sampled_from(["[", "]", "[[1-2]]", "[]"])))
    return "".join(parts)




def _write_site(folder: Path, files: dict[str, str], name: str = "xfel") -> None:
    site = folder / name
    site.mkdir(parents=True, exist_ok=True)
    for old in site.glob("*.yaml"):
        old.unlink()
    for name, text in files.items():
        (site / name).write_text(text, encoding="utf-8")


def _check(folder: Path, name: str = "xfel") -> None:
    with mock.patch.dict(os.environ, {"RUNBOOK_INVENTORY_PATH": str(folder)}):
        try:
            inventory = load_site(name)
        except ValidationError as exc:
            for message in exc.problems:
                m = POSITION.match(message)
                assert m, f"no file:line:col in {message!r}"
                assert m["file"].startswith(str(folder)), message
            return
    for name in inventory.instrument_names():
        inventory.context(name)
        for group in inventory.instrument(name).groups:
            assert len(inventory.group_hosts(name, group)) <= MAX_HOSTS
    inventory.context(None)
    inventory.fingerprint()


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-inventory")


def test_the_real_site_loads(folder: Path) -> None:
    _write_site(folder, TEXTS)
    _check(folder)


@FUZZ
@given(pattern=host_patterns())
def test_host_patterns_expand_or_say_why(pattern: str) -> None:
    try:
        total = count_hosts(pattern)
        names = expand_hosts(pattern)
    except HostPatternError as exc:
        assert str(exc).startswith("bad host pattern ")
        return
    assert len(names) == total <= MAX_HOSTS
    assert all(re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", n) for n in names)


@FUZZ
@given(patterns=st.lists(host_patterns(), min_size=1, max_size=4), as_key=st.booleans())
def test_sites_with_generated_host_ranges(folder: Path, patterns: list[str],
                                          as_key: bool) -> None:
    site = copy.deepcopy(LOCAL)
    if as_key:
        site["hosts"] = {p: {"vars": {"x": 1}} for p in patterns}
    else:
        site["instruments"]["LAB"]["groups"]["fuzz"] = {"hosts": patterns}
    _write_site(folder, {"site.yaml": dump(site)}, "local")
    _check(folder, "local")


WEIRD = st.sampled_from(["", "é", "\x00", "a\nb", "{{ ''.__class__.__mro__ }}", "{{ broken",
                         "{{ account }}", "[0-99999999]", "x[9-0]", "~", "$(touch pwned)",
                         "x" * 3000, "SPB; rm -rf x"])
VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), WEIRD),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6) | WEIRD,
                                                                 inner, max_size=3),
    max_leaves=8)






@FUZZ
@given(data=st.data())
def test_sites_with_mutated_structure(folder: Path, data: st.DataObject) -> None:
    files = {name: copy.deepcopy(body) for name, body in XFEL.items()}
    for _ in range(data.draw(st.integers(1, 4))):
        name = data.draw(st.sampled_from(sorted(files)))
        places = paths(files[name])[1:]
        if not places:
            continue
        path = data.draw(st.sampled_from(places))
        parent: Any = files[name]
        for part in path[:-1]:
            parent = parent[part]
        how = data.draw(st.sampled_from(["delete", "replace", "add"]))
        if how == "delete":
            del parent[path[-1]]
        elif how == "replace":
            parent[path[-1]] = data.draw(VALUES)
        elif isinstance(parent, dict):
            parent[data.draw(st.text(max_size=8) | WEIRD)] = data.draw(VALUES)
        else:
            parent.append(data.draw(VALUES))
    _write_site(folder, {name: dump(body) for name, body in files.items()})
    _check(folder)


@FUZZ
@given(data=st.data())
def test_sites_edited_as_text(folder: Path, data: st.DataObject) -> None:
    files = dict(TEXTS)
    name = data.draw(st.sampled_from(sorted(files)))
    lines = files[name].splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(lines) - 1))
        edit = data.draw(st.sampled_from(["delete", "duplicate", "insert", "alias", "indent"]))
        if edit == "delete" and len(lines) > 1:
            del lines[i]
        elif edit == "duplicate":
            lines.insert(data.draw(st.integers(0, len(lines))), lines[i])
        elif edit == "insert":
            at = data.draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + data.draw(WEIRD | st.text(max_size=4)) + lines[i][at:]
        elif edit == "alias" and ":" in lines[i]:
            key, _, value = lines[i].partition(":")
            lines[i] = f"{key}: &a{value}" if data.draw(st.booleans()) else f"{key}: *a"
        else:
            lines[i] = " " * data.draw(st.integers(1, 5)) + lines[i]
    files[name] = "\n".join(lines) + "\n"
    _write_site(folder, files)
    _check(folder)
