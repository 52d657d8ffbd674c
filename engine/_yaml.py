"""YAML with positions: every node keeps the (line, col) where it was written.

Problems are reported as `file:line:col: message`, so the loader remembers where each
mapping key and sequence item came from, the way ansible keeps `ansible_pos`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.nodes import MappingNode, SequenceNode

from .errors import ValidationError

__all__ = ["Pos", "Positions", "load_yaml", "problem", "did_you_mean", "pydantic_problems"]

Key = tuple[str | int, ...]


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Positions(dict[Key, Pos]):
    """Map from a YAML path (keys and indexes) to where it was written."""

    def at(self, path: Iterable[str | int], default: Pos | None = None) -> Pos:
        """The position of `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self:
                return self[key]
            key = key[:-1]
        if () in self:
            return self[()]
        return default or Pos("<unknown>", 1, 1)


class _Duplicate(Exception):
    def __init__(self, key: Any, node: Any, first: Any) -> None:
        self.key, self.node, self.first = key, node, first


def _convert(node: Any, path: Key, file: str, pos: Positions, construct: Any) -> Any:
    """Node tree -> plain values, recording where each key and item was written."""
    if isinstance(node, MappingNode):
        out: dict[Any, Any] = {}
        first: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = construct(key_node)
            if key == "<<" and key_node.tag.endswith(":merge"):
                merged = _convert(value_node, path, file, pos, construct)
                for part in merged if isinstance(merged, list) else [merged]:
                    for k, v in part.items():
                        out.setdefault(k, v)
                continue
            if key in first:
                raise _Duplicate(key, key_node, first[key])
            first[key] = key_node
            mark = key_node.start_mark
            pos[(*path, key)] = Pos(file, mark.line + 1, mark.column + 1)
            out[key] = _convert(value_node, (*path, key), file, pos, construct)
        return out
    if isinstance(node, SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            mark = item.start_mark
            pos[(*path, i)] = Pos(file, mark.line + 1, mark.column + 1)
            items.append(_convert(item, (*path, i), file, pos, construct))
        return items
    return construct(node)


def load_yaml(path: Path | str, display: str | None = None) -> tuple[Any, Positions]:
    """Load one YAML file into plain Python values plus the position of every node.

    The node tree comes from the C parser when it is installed (several times faster than
    the round-trip loader); syntax errors and duplicate keys become a ValidationError at
    their position.
    """
    file = display or str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError([f"{file}:1:1: cannot read: {exc.strerror}"]) from exc
    yaml = YAML(typ="safe", pure=False)
    positions = Positions()
    positions[()] = Pos(file, 1, 1)
    try:
        root = yaml.compose(text)
        if root is None:
            return None, positions
        constructor = yaml.constructor
        data = _convert(root, (), file, positions,
                        lambda n: constructor.construct_object(n, deep=True))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ValidationError([f"{file}:{line}:{col}: {exc.problem or exc.context}"]) from exc
    except _Duplicate as dup:
        m, f = dup.node.start_mark, dup.first.start_mark
        raise ValidationError([f"{file}:{m.line + 1}:{m.column + 1}: duplicate key "
                               f"'{dup.key}' (first at line {f.line + 1})"]) from None
    return data, positions


def problem(pos: Pos, message: str) -> str:
    return f"{pos}: {message}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a known name is close to `name`, else ''."""
    close = difflib.get_close_matches(str(name), sorted(set(known)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _known_keys(model: Any, loc: Iterable[str | int]) -> list[str]:
    """Field names of the model that sits at `loc` (raw pydantic loc, tags included)."""
    current: Any = model
    for part in loc:
        current = _descend(current, part)
        if current is None:
            return []
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


def _descend(tp: Any, part: str | int) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _descend(args[0], part)
    if origin in (typing.Union, types.UnionType):
        if isinstance(part, str) and part.startswith("<"):
            name = part.strip("<>")
            return next((a for a in args if getattr(a, "__name__", "") == name), None)
        models = [a for a in args if hasattr(a, "model_fields")]
        return _descend(models[0], part) if len(models) == 1 else None
    if origin is dict:
        return args[1] if args else None
    if origin is list:
        return args[0] if args else None
    fields = getattr(tp, "model_fields", None)
    if fields and isinstance(part, str) and part in fields:
        return fields[part].annotation
    return None


def pydantic_problems(exc: Any, positions: Positions, prefix: Key = (),
                      model: Any = None) -> list[str]:
    """Translate a pydantic ValidationError into `file:line:col: message` lines.

    `prefix` is where the validated object sits in the YAML document. Union tags in
    pydantic's `loc` are written `<ModelName>` and dropped, so the path matches the YAML;
    `model` lets an unknown key name its closest known sibling.
    """
    out = []
    for err in exc.errors():
        raw = list(err["loc"])
        loc = [p for p in raw if not (isinstance(p, str) and p.startswith("<"))]
        pos = positions.at((*prefix, *loc))
        field = loc[-1] if loc else ""
        if err["type"] == "extra_forbidden":
            hint = did_you_mean(str(field), _known_keys(model, raw[:-1])) if model else ""
            msg = f"unknown key '{field}'{hint}"
        elif err["type"] == "missing":
            where = ".".join(str(p) for p in loc[:-1])
            msg = f"missing required key '{field}'" + (f" in {where}" if where else "")
        else:
            where = ".".join(str(p) for p in loc)
            msg = f"{where}: {err['msg']}" if where else err["msg"]
        out.append(problem(pos, msg))
    return out
