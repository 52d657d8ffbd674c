"""Load runbook files and report every problem at its `file:line:col`.

Validation collects problems from all files and all layers (YAML, the model, the graph,
the registry, the templates) and fails once.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError as PydanticError

from . import _yaml
from ._templates_static import template_problems
from .errors import ValidationError
from .graph import RunbookGraph
from .spec import ActionStep, CallStep, CheckStep, FindingStep, Runbook, WaitStep

if TYPE_CHECKING:
    from .registry import Registry

__all__ = ["LoadedRunbook", "Catalog", "load_catalog", "default_paths", "REPO"]

REPO = Path(__file__).resolve().parent.parent


def default_paths() -> list[Path]:
    return [REPO / "runbooks"]


@dataclass
class LoadedRunbook:
    runbook: Runbook
    path: Path
    positions: _yaml.Positions
    digest: str

    def pos(self, *path: str | int) -> _yaml.Pos:
        return self.positions.at(path)


@dataclass
class Catalog:
    """Every runbook found, by id; get one with `load_catalog(paths)`."""

    runbooks: dict[str, LoadedRunbook] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, runbook_id: str) -> LoadedRunbook:
        if runbook_id not in self.runbooks:
            hint = _yaml.did_you_mean(runbook_id, self.runbooks)
            raise ValidationError([f"unknown runbook '{runbook_id}'{hint}"])
        return self.runbooks[runbook_id]

    def raise_problems(self) -> None:
        if self.problems:
            raise ValidationError(self.problems)

    def digest(self, runbook_id: str, _seen: set[str] | None = None) -> str:
        """A hash of the runbook and of every runbook that it calls."""
        seen = _seen if _seen is not None else set()
        seen.add(runbook_id)
        lr = self.get(runbook_id)
        h = hashlib.sha256(lr.digest.encode())
        for step in lr.runbook.steps.values():
            if isinstance(step, CallStep) and step.call in self.runbooks and step.call not in seen:
                h.update(self.digest(step.call, seen).encode())
        return h.hexdigest()


def _files(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted([*p.rglob("*.yaml"), *p.rglob("*.yml")])
        else:
            out.append(p)
    return out


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _load_one(path: Path, catalog: Catalog) -> LoadedRunbook | None:
    display = _display(path)
    try:
        data, positions = _yaml.load_yaml(path, display, lazy=True)
    except ValidationError as exc:
        catalog.problems += exc.problems
        return None
    if not isinstance(data, dict):
        catalog.problems.append(f"{display}:1:1: a runbook must be a mapping")
        return None
    try:
        runbook = Runbook.model_validate(data)
    except PydanticError as exc:
        catalog.problems += _yaml.pydantic_problems(exc, positions, model=Runbook)
        return None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LoadedRunbook(runbook, path, positions, digest)


@contextlib.contextmanager
def _no_collection() -> Iterator[None]:
    """The cyclic garbage collector paused: loading makes hundreds of thousands of objects
    that all live on, and each collection would scan them again (a third of the time of a
    10,000-step runbook). What little garbage there is is collected afterwards."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def load_catalog(paths: Iterable[Path] | None = None, registry: Registry | None = None) -> Catalog:
    """Load and check every runbook under `paths`; problems are collected, not raised."""
    with _no_collection():
        return _load_catalog(paths, registry)


def _load_catalog(paths: Iterable[Path] | None, registry: Registry | None) -> Catalog:
    catalog = Catalog()
    for path in _files(paths or default_paths()):
        loaded = _load_one(path, catalog)
        if loaded is None:
            continue
        rid = loaded.runbook.id
        if rid in catalog.runbooks:
            other = catalog.runbooks[rid]
            catalog.problems.append(f"{loaded.pos('id')}: duplicate runbook id '{rid}' "
                                    f"(also at {other.pos('id')})")
            continue
        catalog.runbooks[rid] = loaded
    for loaded in catalog.runbooks.values():
        catalog.problems += _graph_problems(loaded, catalog)
        catalog.problems += template_problems(loaded)
        if registry is not None:
            _registry_problems(loaded, registry, catalog)
    return catalog


def _graph_problems(lr: LoadedRunbook, catalog: Catalog) -> list[str]:
    rb = lr.runbook
    graph = RunbookGraph.of(rb)
    out = []
    if rb.start not in rb.steps:
        hint = _yaml.did_you_mean(rb.start, rb.steps)
        out.append(f"{lr.pos('start')}: unknown step '{rb.start}'{hint}")
    for edge in graph.unknown_targets():
        hint = _yaml.did_you_mean(edge.target, rb.steps)
        out.append(f"{_edge_pos(lr, edge.source, edge.label)}: step '{edge.source}' "
                   f"routes {edge.label} to unknown step '{edge.target}'{hint}")
    if rb.start in rb.steps:
        for step_id in graph.unreachable():
            out.append(f"{lr.pos('steps', step_id)}: step '{step_id}' cannot be reached "
                       f"from start '{rb.start}'")
    cycle = graph.illegal_cycle()
    if cycle:
        out.append(f"{lr.pos('steps', cycle[0])}: cycle {' -> '.join(cycle)} passes through "
                   "no wait step and no retry edge")
    for step_id, step in rb.steps.items():
        if rb.kind == "diagnosis" and isinstance(step, ActionStep):
            out.append(f"{lr.pos('steps', step_id, 'action')}: a diagnosis never changes "
                       f"anything; move action '{step.action}' into a procedure and name it "
                       "in a finding's fix")
        if isinstance(step, FindingStep):
            for i, ref in enumerate(step.evidence):
                if ref not in rb.steps:
                    hint = _yaml.did_you_mean(ref, rb.steps)
                    out.append(f"{lr.pos('steps', step_id, 'evidence', i)}: evidence names "
                               f"unknown step '{ref}'{hint}")
            if step.fix is not None:
                out += _call_problems(lr, catalog, step.fix.runbook, step.fix.with_,
                                      ("steps", step_id, "fix"))
        if isinstance(step, CallStep):
            out += _call_problems(lr, catalog, step.call, step.with_, ("steps", step_id))
    return out


def _edge_pos(lr: LoadedRunbook, step_id: str, label: str) -> _yaml.Pos:
    key = {"branch": "all", "each": "do", "next": "next"}.get(label)
    return lr.pos("steps", step_id, key) if key else lr.pos("steps", step_id, "on", label)


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "list": (list,),
    "instrument": (str,), "host": (str,),
}


def _call_problems(lr: LoadedRunbook, catalog: Catalog, target: str, given: dict[str, Any],
                   where: tuple[str, ...]) -> list[str]:
    if target not in catalog.runbooks:
        hint = _yaml.did_you_mean(target, catalog.runbooks)
        key = "runbook" if where[-1] == "fix" else "call"
        return [f"{lr.pos(*where, key)}: unknown runbook '{target}'{hint}"]
    params = catalog.runbooks[target].runbook.params
    out = []
    for name, value in given.items():
        if name not in params:
            hint = _yaml.did_you_mean(name, params)
            out.append(f"{lr.pos(*where, 'with', name)}: runbook '{target}' has no "
                       f"parameter '{name}'{hint}")
            continue
        want = params[name].type
        templated = isinstance(value, str) and ("{{" in value or "{%" in value)
        is_bool = isinstance(value, bool) and want != "bool"
        if not templated and (is_bool or not isinstance(value, _PY_TYPES[want])):
            out.append(f"{lr.pos(*where, 'with', name)}: parameter '{name}' of '{target}' "
                       f"is {want}, got {type(value).__name__} {value!r}")
    for name, param in params.items():
        if param.required and param.default is None and name not in given \
                and name != "instrument":
            out.append(f"{lr.pos(*where)}: runbook '{target}' needs parameter '{name}'")
    return out


def _registry_problems(lr: LoadedRunbook, registry: Registry, catalog: Catalog) -> None:
    """Unknown check/action names are errors, or warnings in a draft; `with:` is validated."""
    clean: set[tuple[Any, str]] = set()
    for step_id, step in lr.runbook.steps.items():
        if isinstance(step, CheckStep | WaitStep):
            name, key, want = (step.check, "check", "check") if isinstance(step, CheckStep) \
                else (step.wait, "wait", "check")
        elif isinstance(step, ActionStep):
            name, key, want = step.action, "action", "action"
        else:
            continue
        if name not in registry:
            msg = (f"{lr.pos('steps', step_id, key)}: unknown {want} '{name}'"
                   f"{_yaml.did_you_mean(name, registry.names())}")
            if lr.runbook.status == "draft":
                catalog.warnings.append(msg + " (pending: the runbook is a draft)")
            else:
                catalog.problems.append(msg)
            continue
        entry = registry.get(name)
        if entry.kind != want:
            catalog.problems.append(f"{lr.pos('steps', step_id, key)}: '{name}' is an "
                                    f"{entry.kind}, not a {want}")
            continue
        catalog.problems += _with_problems(lr, ("steps", step_id, "with"), step.with_,
                                           entry.model, clean)
        post = getattr(step, "postcondition", None)
        if post is not None:
            catalog.problems += _postcondition_problems(lr, step_id, post, registry, clean)


def _postcondition_problems(lr: LoadedRunbook, step_id: str, post: Any,
                            registry: Registry, clean: set[tuple[Any, str]]) -> list[str]:
    where = ("steps", step_id, "postcondition")
    if post.check not in registry:
        return [f"{lr.pos(*where, 'check')}: unknown check '{post.check}'"
                f"{_yaml.did_you_mean(post.check, registry.names('check'))}"]
    entry = registry.get(post.check)
    if entry.kind != "check":
        return [f"{lr.pos(*where, 'check')}: '{post.check}' is an {entry.kind}; a "
                "postcondition is a read-only check"]
    return _with_problems(lr, (*where, "with"), post.with_, entry.model, clean)


def _with_problems(lr: LoadedRunbook, where: tuple[str, ...], given: dict[str, Any],
                   model: Any, clean: set[tuple[Any, str]]) -> list[str]:
    """`clean` holds the (model, `with:`) pairs found without problems: steps repeat their
    hosts and accounts, and a templated host fails pydantic first (an exception each)."""
    seen = (model, repr(given))
    if seen in clean:
        return []
    try:
        model.model_validate(given)
    except PydanticError as exc:
        keep = []
        for err in exc.errors():
            value = given.get(str(err["loc"][0])) if err["loc"] else None
            templated = isinstance(value, str) and ("{{" in value or "{%" in value)
            # a templated value's type is known only once the template is rendered
            keep.append(not templated or err["type"] in ("missing", "extra_forbidden"))
        if any(keep):
            lines = _yaml.pydantic_problems(exc, lr.positions, where, model=model)
            return [line for line, kept in zip(lines, keep, strict=True) if kept]
    clean.add(seen)
    return []
