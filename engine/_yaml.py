"""YAML with positions: every node keeps the (line, col) where it was written.

Problems are reported as `file:line:col: message`, so the loader remembers where each
mapping key and sequence item came from, the way ansible keeps `ansible_pos`.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ._yaml_tree import (
    MAX_ALIASED,
    MAX_DEPTH,
    MAX_NODES,
    LazyPositions,
    Pos,
    Positions,
    TreeError,
    build,
)
from .errors import ValidationError

__all__ = ["Pos", "Positions", "load_yaml", "problem", "did_you_mean", "pydantic_problems",
           "MAX_BYTES", "MAX_DEPTH", "MAX_NODES", "MAX_ALIASED"]

MAX_BYTES = 8 * 1024 * 1024
"""The largest YAML file read; 10,000 runbook steps take under 2 MiB."""

Key = tuple[Any, ...]


def _read(path: Path | str, file: str) -> str:
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ValidationError([f"{file}:1:1: cannot read: {exc.strerror}"]) from exc
    if len(raw) > MAX_BYTES:
        raise ValidationError([f"{file}:1:1: larger than {MAX_BYTES // (1024 * 1024)} MiB; "
                               "split it into several files"])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        col = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ValidationError([f"{file}:{line}:{col}: not UTF-8 text (byte "
                               f"0x{raw[exc.start]:02x})"]) from None


def _reader_problem(exc: YAMLError, text: str, file: str) -> str:
    """ruamel's ReaderError (a control character) has an offset, not a mark."""
    offset = getattr(exc, "position", None)
    if not isinstance(offset, int):
        return f"{file}:1:1: {exc}"
    data = text.encode("utf-8")  # the C reader counts bytes
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[data.rfind(b"\n", 0, offset) + 1 : offset].decode("utf-8", "replace")) + 1
    char = getattr(exc, "character", None)
    code = ord(char) if isinstance(char, str) and len(char) == 1 else char
    what = f"character U+{code:04X}" if isinstance(code, int) else "a character"
    return f"{file}:{line}:{col}: {what} is not allowed in YAML (a control character)"


def load_yaml(path: Path | str, display: str | None = None,
              lazy: bool = False) -> tuple[Any, Positions]:
    """Load one YAML file into plain Python values plus the position of every node; with
    `lazy`, the positions are found when first asked for (the text is parsed again then).

    Every problem, including the limits of `engine._yaml_tree` and of MAX_BYTES, is a
    ValidationError at its `file:line:col`.
    """
    file = display or str(path)
    text = _read(path, file)
    try:
        if lazy:
            return build(text, file, keep=False)[0], LazyPositions(text, file)
        return build(text, file)
    except TreeError as exc:
        raise ValidationError([f"{file}:{exc.line}:{exc.col}: {exc.why}"]) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise ValidationError([f"{file}:{line}:{col}: {exc.problem or exc.context}"]) from exc
    except YAMLError as exc:
        raise ValidationError([_reader_problem(exc, text, file)]) from exc


def problem(pos: Pos, message: str) -> str:
    return f"{pos}: {message}"


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when a known name is close to `name`, else ''."""
    close = difflib.get_close_matches(str(name), sorted({str(k) for k in known}), n=1,
                                      cutoff=0.6)
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
