"""Find template variables that can never resolve, before anything runs.

Names that depend on the inventory are resolved at plan time; what can be known from the
runbook alone (its roots and its declared params) is checked here, at `file:line:col`.
A template that reaches for a private attribute (`''.__class__`) is refused here too:
the sandbox would refuse it at run time, but then only the step that renders it fails.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from ._yaml import did_you_mean
from .spec import ForeachStep

if TYPE_CHECKING:
    from ._yaml import Positions
    from .loader import LoadedRunbook

__all__ = ["template_problems", "unsafe_templates", "ROOTS"]

ROOTS = ("instrument", "site", "params", "vars")
_env = SandboxedEnvironment()


Path_ = tuple[Any, ...]


@dataclass(frozen=True)
class _Facts:
    """What one template text needs, found once per distinct text."""

    error: str | None = None
    names: tuple[str, ...] = ()          # undeclared variables
    params: tuple[str, ...] = ()         # attributes read from `params`
    private: tuple[str, ...] = ()        # attribute names that start with '_'


def _strings(value: Any, path: Path_) -> Iterator[tuple[Path_, str]]:
    if isinstance(value, str):
        if "{{" in value or "{%" in value:
            yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _strings(v, (*path, i))


def _private(ast: nodes.Template) -> list[str]:
    found = [n.attr for n in ast.find_all(nodes.Getattr) if n.attr.startswith("_")]
    for item in ast.find_all(nodes.Getitem):
        if isinstance(item.arg, nodes.Const) and isinstance(item.arg.value, str) \
                and item.arg.value.startswith("_"):
            found.append(item.arg.value)
    for call in ast.find_all(nodes.Filter):
        if call.name == "attr" and call.args and isinstance(call.args[0], nodes.Const) \
                and str(call.args[0].value).startswith("_"):
            found.append(str(call.args[0].value))
    return found


_EXPRESSION = re.compile(r"\{\{(.*?)\}\}", re.S)
_RESERVED = frozenset({"true", "false", "none", "True", "False", "None", "and", "or", "not",
                       "in", "is", "if", "else", "elif", "for", "endfor", "endif", "block",
                       "with", "set", "import", "include", "from", "as", "recursive",
                       "macro", "call", "filter", "extends", "pluck", "loop", "self"})
_SIMPLE = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]+\])*)\s*")


def _simple_facts(text: str) -> _Facts | None:
    """The facts of a text whose expressions are all dotted names (`{{ vars.x[0] }}`),
    as most are, without Jinja's parser (a tenth of the time); None for anything else."""
    names: list[str] = []
    params: list[str] = []
    private: list[str] = []
    for match in _EXPRESSION.finditer(text):
        simple = _SIMPLE.fullmatch(match[1])
        if simple is None:
            return None
        name, rest = simple[1], simple[2]
        attrs = [a for a in re.split(r"[.\[\]]", rest) if a and not a.isdigit()]
        if name in _RESERVED or _RESERVED.intersection(attrs):
            return None
        names.append(name)
        if name == "params" and rest.startswith("."):
            params.append(attrs[0])
        private += [a for a in attrs if a.startswith("_")]
    if any(mark in _EXPRESSION.sub("", text) for mark in ("{{", "{%", "{#")):
        return None
    builtins = _env.globals
    return _Facts(names=tuple(sorted({n for n in names if n not in builtins})),
                  params=tuple(params), private=tuple(dict.fromkeys(private)))


@functools.lru_cache(maxsize=8192)
def _facts(text: str) -> _Facts:
    simple = _simple_facts(text)
    if simple is not None:
        return simple
    try:
        ast = _env.parse(text)
        names = tuple(sorted(meta.find_undeclared_variables(ast)))
        params = tuple(node.attr for node in ast.find_all(nodes.Getattr)
                       if isinstance(node.node, nodes.Name) and node.node.name == "params")
        private = tuple(sorted(set(_private(ast)), key=text.find))
    except TemplateSyntaxError as exc:
        return _Facts(error=f"template syntax error: {exc.message}")
    except RecursionError:
        return _Facts(error="template nested too deeply to read")
    return _Facts(names=names, params=params, private=private)


def _unsafe(facts: _Facts) -> str | None:
    if facts.error:
        return facts.error
    if facts.private:
        return (f"template reads the private attribute '{facts.private[0]}', which the "
                "sandbox refuses; use the plain value")
    return None


def unsafe_templates(value: Any, positions: Positions, path: Path_ = ()) -> list[str]:
    """`file:line:col` problems for the template strings under `value` that can never
    render: a syntax error, or a private attribute (for files whose strings are not
    checked against a runbook, such as a site's)."""
    out = []
    for where, text in _strings(value, path):
        why = _unsafe(_facts(text))
        if why:
            out.append(f"{positions.at(where)}: {why}")
    return out


def template_problems(lr: LoadedRunbook) -> list[str]:
    rb = lr.runbook
    loop_names = {s.as_ for s in rb.steps.values() if isinstance(s, ForeachStep)}
    roots = set(ROOTS) | loop_names
    out = []
    for step_id, step in rb.steps.items():
        raw = step.model_dump(by_alias=True, exclude_defaults=True)
        for path, text in _strings(raw, ("steps", step_id)):
            facts = _facts(text)
            # when the action began: only its postcondition is rendered with it
            known = roots | {"started_at"} if path[2:3] == ("postcondition",) else roots
            why = _unsafe(facts)
            if why:
                out.append(f"{lr.pos(*path)}: {why}")
                if facts.error:
                    continue
            for name in facts.names:
                if name not in known:
                    hint = did_you_mean(name, known)
                    out.append(f"{lr.pos(*path)}: unresolved template variable '{name}'{hint}; "
                               f"known: {', '.join(sorted(known))}")
            for attr in facts.params:
                if attr not in rb.params:
                    hint = did_you_mean(attr, rb.params)
                    out.append(f"{lr.pos(*path)}: unresolved template variable 'params.{attr}': "
                               f"runbook '{rb.id}' declares no such parameter{hint}")
    return out
