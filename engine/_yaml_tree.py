"""YAML text -> plain values plus the position of every node, with limits.

Built from the C parser's event stream in one loop, without recursion: a file nested a
hundred thousand levels deep crashes the C composer (a stack overflow, not an exception),
and an alias bomb ("billion laughs") expands to more values than memory holds. So this
builder refuses, at the offending line, a file nested deeper than MAX_DEPTH, one whose
aliases add more than MAX_ALIASED values, or one of more than MAX_NODES values. It refuses
what would be silently odd later: a second document, a recursive or unknown alias, a
collection as a mapping key, a duplicate key, and tags other than YAML's standard ones.

Scalars resolve as YAML 1.2 does (ruamel's rules, `yes` is a string), once per distinct
plain value; an alias is a copy of its anchor's value, so that no caller shares objects.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from ruamel.yaml import YAML
from ruamel.yaml.events import (
    AliasEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import implicit_resolvers

__all__ = ["Pos", "Positions", "LazyPositions", "TreeError", "build", "MAX_DEPTH", "MAX_NODES",
           "MAX_ALIASED"]

MAX_DEPTH = 64
"""Nesting levels; a runbook uses about six."""
MAX_NODES = 1_000_000
"""Values (keys, scalars, collections) after alias expansion; 10,000 steps are about 250,000."""
MAX_ALIASED = 100_000
"""Values that aliases may add: sharing a block is fine, doubling it twenty times is not."""

Key = tuple[Any, ...]
_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_TAG}{t}" for t in ("null", "bool", "int", "float", "binary", "timestamp")}
_MAP_TAGS = {None, "!", f"{_TAG}map"}
_SEQ_TAGS = {None, "!", f"{_TAG}seq"}
_MERGE = object()
_STARTS = (MappingStartEvent, SequenceStartEvent)


class Pos(NamedTuple):
    """Where a node was written: 1-based line and column."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class Positions(dict[Key, Pos]):
    """Map from a YAML path (keys and indexes) to where it was written."""

    def at(self, path: Iterable[Any], default: Pos | None = None) -> Pos:
        """The position of `path`, or of its nearest ancestor that has one."""
        key = tuple(path)
        while key:
            if key in self:
                return self[key]
            key = key[:-1]
        if () in self:
            return self[()]
        return default or Pos("<unknown>", 1, 1)


class LazyPositions(Positions):
    """Positions found when first asked for: a file without problems is parsed once,
    without them (a fifth of the YAML time of a 10,000-step runbook)."""

    def __init__(self, text: str, file: str) -> None:
        super().__init__()
        self._source: tuple[str, str] | None = (text, file)

    def _fill(self) -> None:
        if self._source is not None:
            text, file = self._source
            self._source = None
            self.update(build(text, file)[1])

    def at(self, path: Iterable[Any], default: Pos | None = None) -> Pos:
        self._fill()
        return super().at(path, default)

    def __getitem__(self, key: Key) -> Pos:
        self._fill()
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._fill()
        return super().__contains__(key)


class TreeError(Exception):
    """A problem at a place in the text; the loader turns it into `file:line:col: why`."""

    def __init__(self, mark: Any, why: str) -> None:
        super().__init__(why)
        self.line = mark.line + 1 if mark is not None else 1
        self.col = mark.column + 1 if mark is not None else 1
        self.why = why


_yaml = YAML(typ="safe", pure=False)
_constructor = _yaml.constructor


def _resolver_table() -> dict[str | None, list[tuple[str, Any]]]:
    """YAML 1.2's implicit scalar rules, by first character (None: any character)."""
    table: dict[str | None, list[tuple[str, Any]]] = {}
    for versions, tag, regexp, first in implicit_resolvers:
        if (1, 2) in versions:
            chars: list[str | None] = list(first) if first else [None]
            for ch in chars:
                table.setdefault(ch, []).append((tag, regexp))
    return table


_resolvers = _resolver_table()


def _events(text: str) -> Iterator[Any]:
    """The parser's events; from the C parser directly where it is installed (ruamel's
    generator around it costs a fifth of the time), one parser per text."""
    parser_class = _yaml.Parser
    if parser_class.__name__ != "CParser":
        yield from YAML(typ="safe", pure=True).parse(text)
        return
    parser = parser_class(text)
    try:
        while True:
            event = parser.get_event()
            yield event
            if type(event) is StreamEndEvent:
                return
    finally:
        parser.dispose()


_STR = f"{_TAG}str"


@functools.lru_cache(maxsize=65536)
def _plain_tag(value: str) -> str:
    """The tag that a plain (unquoted) scalar resolves to under YAML 1.2."""
    for tag, regexp in _resolvers.get(value[:1], []) + _resolvers.get(None, []):
        if regexp.match(value):
            return str(tag)
    return _STR


def _scalar(event: ScalarEvent) -> Any:
    tag = event.tag
    if tag is None:
        if not event.implicit[0]:
            return event.value          # quoted: a string
        tag = _plain_tag(event.value)
    if tag in (None, "!", _STR, f"{_TAG}value"):
        return event.value
    if tag == f"{_TAG}merge":
        return _MERGE
    if tag not in _SCALAR_TAGS:
        raise TreeError(event.start_mark, f"tag '{tag}' is not supported here")
    node = ScalarNode(tag, event.value, event.start_mark, event.end_mark)
    try:
        return _constructor.yaml_constructors[tag](_constructor, node)
    except (ValueError, TypeError, ArithmeticError, LookupError) as exc:
        why = str(exc).split(";")[0]
        raise TreeError(event.start_mark, f"cannot read {event.value[:40]!r} as "
                        f"{tag.removeprefix(_TAG)}: {why}") from exc


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def _merge(into: dict[Any, Any], merged: Any, mark: Any) -> None:
    """`<<: *base`: the keys of `base` that are not set yet (keys written later win)."""
    parts = merged if isinstance(merged, list) else [merged]
    if not all(isinstance(p, dict) for p in parts):
        raise TreeError(mark, "a merge ('<<') takes a mapping or a list of mappings")
    for part in parts:
        for k, v in part.items():
            into.setdefault(k, v)


class _Frame:
    __slots__ = ("value", "is_map", "path", "anchor", "count", "start", "key", "has_key",
                 "marks")

    def __init__(self, value: Any, path: Key, anchor: str | None, count: int,
                 start: Any) -> None:
        self.value = value
        self.is_map = isinstance(value, dict)
        self.path = path
        self.anchor = anchor
        self.count = count          # nodes counted before this collection began
        self.start = start
        self.key: Any = None
        self.has_key = False        # a mapping holds its key until its value comes
        self.marks: dict[Any, Any] = {}


def _too_many(mark: Any) -> TreeError:
    return TreeError(mark, f"more than {MAX_NODES:,} values; split the file")


def _alias(event: AliasEvent, anchors: dict[str, tuple[Any, int]], stack: list[_Frame],
           aliased: int) -> tuple[Any, int]:
    """A copy of the anchored value, and how many values it counts for; `aliased` is how
    many values aliases have added so far."""
    name = event.anchor
    if name not in anchors:
        open_ = any(f.anchor == name for f in stack)
        raise TreeError(event.start_mark, f"alias '*{name}' refers to "
                        + ("the collection that holds it (a recursive alias)" if open_
                           else "no anchor defined before it"))
    value, size = anchors[name]
    if aliased + size > MAX_ALIASED:
        raise TreeError(event.start_mark, f"aliases expand to more than {MAX_ALIASED:,} "
                        "values (an alias bomb?); write the values out, or share less")
    return _copy(value), size


def _key(frame: _Frame, key: Any, mark: Any) -> None:
    if isinstance(key, dict | list):
        raise TreeError(mark, "a mapping key must be a plain value, not a collection")
    if key is not _MERGE:
        first = frame.marks.get(key)
        if first is not None:
            raise TreeError(mark, f"duplicate key '{key}' (first at line {first.line + 1})")
        frame.marks[key] = mark
    frame.key, frame.has_key = key, True


def _start(event: Any, mark: Any, path: Key, depth: int, count: int) -> _Frame:
    if depth >= MAX_DEPTH:
        raise TreeError(mark, f"nested more than {MAX_DEPTH} levels deep")
    is_map = type(event) is MappingStartEvent
    if event.tag not in (_MAP_TAGS if is_map else _SEQ_TAGS):
        raise TreeError(mark, f"tag '{event.tag}' is not supported here")
    return _Frame({} if is_map else [], path, event.anchor, count - 1, mark)


def build(text: str, file: str, keep: bool = True) -> tuple[Any, Positions]:
    """Plain values and positions of the one document in `text` (with `keep` false, only
    the document's own position).

    Raises TreeError for what this module refuses, and ruamel's own errors for what the
    parser cannot read. One loop over the events, with the common cases (a plain or
    quoted string) inline: it runs once per node of every file loaded.
    """
    positions = Positions()
    positions[()] = Pos(file, 1, 1)
    stack: list[_Frame] = []
    anchors: dict[str, tuple[Any, int]] = {}
    count = aliased = 0
    root: Any = None
    documents = 0
    str_tag = _STR
    for event in _events(text):
        kind = type(event)
        frame = stack[-1] if stack else None
        if kind is ScalarEvent or kind is AliasEvent:
            mark = event.start_mark
            if kind is ScalarEvent:
                count += 1
                if event.tag is None and (not event.implicit[0]
                                          or _plain_tag(event.value) is str_tag):
                    value = event.value
                else:
                    value = _scalar(event)
                if event.anchor is not None:
                    anchors[event.anchor] = (value, 1)
            else:
                value, size = _alias(event, anchors, stack, aliased)
                aliased += size
                count += size
            if count > MAX_NODES:
                raise _too_many(mark)
            if frame is not None and frame.is_map and not frame.has_key:
                _key(frame, value, mark)
                if keep and value is not _MERGE:
                    positions[(*frame.path, value)] = Pos(file, mark.line + 1,
                                                          mark.column + 1)
                continue
            if value is _MERGE:
                value = event.value
            if keep and frame is not None and not frame.is_map:
                positions[(*frame.path, len(frame.value))] = Pos(file, mark.line + 1,
                                                                 mark.column + 1)
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            mark = event.start_mark
            count += 1
            if count > MAX_NODES:
                raise _too_many(mark)
            if frame is None:
                path: Key = ()
            elif frame.is_map:
                if not frame.has_key:
                    raise TreeError(mark, "a mapping key must be a plain value, not a "
                                    "collection")
                path = (*frame.path, "<<" if frame.key is _MERGE else frame.key)
            else:
                path = (*frame.path, len(frame.value))
                if keep:
                    positions[path] = Pos(file, mark.line + 1, mark.column + 1)
            stack.append(_start(event, mark, path, len(stack), count))
            continue
        elif kind is MappingEndEvent or kind is SequenceEndEvent:
            done = stack.pop()
            value = done.value
            if done.anchor is not None:
                anchors[done.anchor] = (value, count - done.count)
            mark = done.start
            frame = stack[-1] if stack else None
        elif kind is StreamEndEvent:
            break
        else:
            if kind is DocumentStartEvent:
                documents += 1
                if documents > 1:
                    raise TreeError(event.start_mark, "a second YAML document ('---'); "
                                    "a file holds one")
            continue
        if frame is None:
            root = value
        elif not frame.is_map:
            frame.value.append(value)
        else:
            if frame.key is _MERGE:
                _merge(frame.value, value, mark)
            else:
                frame.value[frame.key] = value
            frame.key, frame.has_key = None, False
    return root, positions
