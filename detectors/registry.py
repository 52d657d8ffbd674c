"""Look detector types up by name, forgiving case but not typos."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from types import MappingProxyType

from detectors.errors import UnknownDetectorType
from detectors.model import DetectorType
from detectors.types import ALL

__all__ = ["DETECTOR_TYPES", "get_detector_type"]

DETECTOR_TYPES: Mapping[str, DetectorType] = MappingProxyType({d.name: d for d in ALL})

_BY_KEY = {d.name.lower(): d for d in ALL} | {d.display_name.lower(): d for d in ALL}


def get_detector_type(name: str | DetectorType) -> DetectorType:
    """The detector type called `name` (case-insensitive, e.g. "agipd", "ePix100")."""
    if isinstance(name, DetectorType):
        return name
    found = _BY_KEY.get(name.strip().lower())
    if found is not None:
        return found
    known = sorted(DETECTOR_TYPES)
    close = difflib.get_close_matches(name.strip().upper(), known, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownDetectorType(
        f"unknown detector type {name!r}{hint}; known types: {', '.join(known)}"
    )
