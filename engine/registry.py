"""Checks and actions by name.

`@check("name")` and `@action("name")` only tag a function. A `Registry` collects tagged
functions from modules, validates every one of them before it registers any, and rejects
duplicates naming both places. Third-party modules join through the entry-point group
`runbook.checks`; the built-in ones are declared there too, so there is one way in.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any, Literal, get_type_hints

from pydantic import BaseModel

from .errors import RunbookError

__all__ = [
    "check", "action", "Entry", "Registry", "RegistryError", "MutationRefused",
    "mutations_allowed", "guard_mutation", "guard_transport", "default_registry",
    "ENTRY_POINT_GROUP",
]

ENTRY_POINT_GROUP = "runbook.checks"
Kind = Literal["check", "action"]
_TAG = "__runbook_entry__"

# Three states: None outside any walk (the dark job, the caldb CLI, the twin's seeding),
# False inside a plan or diagnose walk, True inside a run walk (`engine.walk` sets it).
_mutations: contextvars.ContextVar[bool | None] = contextvars.ContextVar("mutations",
                                                                        default=None)


class RegistryError(RunbookError):
    pass


class MutationRefused(RunbookError):
    """A change was asked for while the walk may not change anything (diagnose or plan)."""


def mutations_allowed() -> contextvars.ContextVar[bool | None]:
    """The switch a walk sets: True in `run` mode, False in plan and diagnose; outside any
    walk it is None."""
    return _mutations


def guard_mutation(what: str) -> None:
    """Raise unless the current walk is allowed to change the facility (actions: they
    change things only inside a `run` walk)."""
    if not _mutations.get():
        raise MutationRefused(f"refused to {what}: this walk may not change anything")


def guard_transport(what: str) -> None:
    """Raise inside a plan or diagnose walk (transports: a slot call, a set, a command not
    marked read-only, a DB write).  Outside any walk (the dark job, the caldb CLI, the
    twin) it lets the change through; only a walk that said "no changes" refuses."""
    if _mutations.get() is False:
        raise MutationRefused(f"refused to {what}: a plan or diagnose walk changes nothing")


def _tag(kind: Kind, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        setattr(fn, _TAG, (kind, name))
        return fn
    return mark


def check(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Tag a read-only check: `def fn(params: Model, ctx: Context) -> Result`."""
    return _tag("check", name)


def action(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Tag an action (a change); it can only run when the walk allows mutations."""
    return _tag("action", name)


@dataclass(frozen=True)
class Entry:
    name: str
    kind: Kind
    fn: Callable[..., Any]
    model: type[BaseModel]
    where: str

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


def _where(fn: Callable[..., Any]) -> str:
    try:
        file = inspect.getsourcefile(fn) or fn.__module__
        line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return f"{fn.__module__}.{fn.__qualname__}"
    return f"{file}:{line}"


def _guarded(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            guard_mutation(f"run action '{name}'")
            return await fn(*args, **kwargs)
        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        guard_mutation(f"run action '{name}'")
        return fn(*args, **kwargs)
    return run


def _entry(fn: Callable[..., Any]) -> Entry | str:
    kind, name = getattr(fn, _TAG)
    where = _where(fn)
    params = list(inspect.signature(fn).parameters)
    if len(params) != 2:
        return f"{where}: {kind} '{name}' must take (params, ctx), not {params}"
    try:
        hints = get_type_hints(fn)
    except Exception as exc:  # noqa: BLE001 - any failure to resolve hints is a bad signature
        return f"{where}: {kind} '{name}': cannot read its type hints: {exc}"
    model = hints.get(params[0])
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return f"{where}: {kind} '{name}': first parameter must be a pydantic model"
    call = _guarded(fn, name) if kind == "action" else fn
    return Entry(name=name, kind=kind, fn=call, model=model, where=where)


def _tagged(module: ModuleType) -> list[Callable[..., Any]]:
    """Tagged functions defined in `module` itself, not those that it imports."""
    return [v for v in vars(module).values()
            if callable(v) and hasattr(v, _TAG) and getattr(v, "__module__", "") == module.__name__]


class Registry:
    """Named checks and actions; get the process-wide one with `default_registry()`."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: str) -> Entry:
        return self._entries[name]

    def names(self, kind: Kind | None = None) -> list[str]:
        return sorted(n for n, e in self._entries.items() if kind is None or e.kind == kind)

    def register_functions(self, functions: Iterable[Callable[..., Any]]) -> None:
        """Validate every function, then register all of them or none."""
        found: list[Entry] = []
        problems: list[str] = []
        for fn in functions:
            got = _entry(fn)
            if isinstance(got, str):
                problems.append(got)
            else:
                found.append(got)
        seen: dict[str, Entry] = dict(self._entries)
        for entry in found:
            if entry.name in seen:
                problems.append(f"duplicate {entry.kind} '{entry.name}': {entry.where} "
                                f"and {seen[entry.name].where}")
            else:
                seen[entry.name] = entry
        if problems:
            raise RegistryError("\n".join(problems))
        self._entries = seen

    def register_module(self, module: ModuleType) -> None:
        self.register_functions(_tagged(module))

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> None:
        modules = []
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                modules.append(importlib.import_module(ep.value.split(":")[0]))
            except ImportError as exc:
                raise RegistryError(f"entry point '{ep.name}' ({ep.value}): {exc}") from exc
        self.register_functions([fn for m in modules for fn in _tagged(m)])


_default: Registry | None = None


def default_registry() -> Registry:
    """The registry of every installed check module (built-in and third-party)."""
    global _default
    if _default is None:
        reg = Registry()
        reg.load_entry_points()
        _default = reg
    return _default
