"""Find template variables that can never resolve, before anything runs.

Names that depend on the inventory are resolved at plan time; what can be known from the
runbook alone (its roots and its declared params) is checked here, at `file:line:col`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from ._yaml import did_you_mean
from .spec import ForeachStep

if TYPE_CHECKING:
    from .loader import LoadedRunbook

__all__ = ["template_problems", "ROOTS"]

ROOTS = ("instrument", "site", "params", "vars")
_env = SandboxedEnvironment()


Path_ = tuple[str | int, ...]


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


def template_problems(lr: LoadedRunbook) -> list[str]:
    rb = lr.runbook
    loop_names = {s.as_ for s in rb.steps.values() if isinstance(s, ForeachStep)}
    roots = set(ROOTS) | loop_names
    out = []
    for step_id, step in rb.steps.items():
        raw = step.model_dump(by_alias=True, exclude_defaults=True)
        for path, text in _strings(raw, ("steps", step_id)):
            pos = lr.pos(*path)
            try:
                ast = _env.parse(text)
            except TemplateSyntaxError as exc:
                out.append(f"{pos}: template syntax error: {exc.message}")
                continue
            for name in sorted(meta.find_undeclared_variables(ast)):
                if name not in roots:
                    hint = did_you_mean(name, roots)
                    out.append(f"{pos}: unresolved template variable '{name}'{hint}; "
                               f"known: {', '.join(sorted(roots))}")
            for node in ast.find_all(nodes.Getattr):
                if isinstance(node.node, nodes.Name) and node.node.name == "params" \
                        and node.attr not in rb.params:
                    hint = did_you_mean(node.attr, rb.params)
                    out.append(f"{pos}: unresolved template variable 'params.{node.attr}': "
                               f"runbook '{rb.id}' declares no such parameter{hint}")
    return out
