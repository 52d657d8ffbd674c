"""What a check or action may know about the walk that calls it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Resources", "Context"]


class Resources:
    """Connections shared by every check of one walk, closed when the walk ends.

    A transport keeps one SSH connection per host, or one Karabo client, here, so that a
    later step of the same walk reuses what an earlier one opened.
    """

    def __init__(self) -> None:
        self._items: dict[Any, Any] = {}
        self._closers: list[Callable[[], Any]] = []
        self._lock = threading.Lock()

    def get(self, key: Any, factory: Callable[[], Any],
            close: Callable[[Any], Any] | None = None) -> Any:
        with self._lock:
            if key not in self._items:
                value = factory()
                self._items[key] = value
                if close is not None:
                    self._closers.append(lambda: close(value))
            return self._items[key]

    def close(self) -> None:
        with self._lock:
            closers, self._closers = self._closers, []
            self._items.clear()
        for closer in reversed(closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing must not hide the walk's result
                continue


@dataclass
class Context:
    """Handed to every check and action as its second argument by the walker."""

    mode: str
    site: str
    transport: dict[str, Any]
    instrument: str | None = None
    timeout: float = 30.0
    resources: Resources = field(default_factory=Resources)
    vars: dict[str, Any] = field(default_factory=dict)
    #: the instrument as templates see it: karabo broker and topic, devices, groups
    instrument_info: dict[str, Any] = field(default_factory=dict)
