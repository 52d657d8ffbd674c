"""What the fuzz tests share: hypothesis settings, and mutating YAML-shaped data."""

from __future__ import annotations

import re
from io import StringIO
from typing import Any

from hypothesis import HealthCheck, settings
from ruamel.yaml import YAML

FUZZ = settings(max_examples=2000, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
"""2,000 cases, the same ones on every run (derandomized), nothing written to disk."""

POSITION = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): \S")
_DUMPER = YAML(typ="safe", pure=False)
_DUMPER.default_flow_style = False


def dump(data: Any) -> str:
    out = StringIO()
    _DUMPER.dump(data, out)
    return out.getvalue()


def paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The path of every node under `value`, `()` first."""
    found = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            found += paths(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += paths(v, (*path, i))
    return found
