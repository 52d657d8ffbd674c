"""Shared fixtures: runbooks written into tmp folders, a test registry, the local site."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.inventory import Inventory, load_site
from engine.loader import Catalog, load_catalog
from engine.registry import Registry


@pytest.fixture
def write_runbook(tmp_path: Path) -> Callable[[str, str], Path]:
    """Write one runbook file (dedented) into a tmp runbook folder; return its path."""
    folder = tmp_path / "runbooks"
    folder.mkdir(exist_ok=True)

    def write(name: str, text: str) -> Path:
        path = folder / name
        path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
        return path
    return write


@pytest.fixture
def registry() -> Registry:
    """Built-in checks plus the test checks in tests/_checks.py."""
    from tests import _checks
    reg = Registry()
    reg.load_entry_points()
    reg.register_module(_checks)
    return reg


@pytest.fixture
def load(registry: Registry) -> Callable[[Path], Catalog]:
    def load_(folder: Path) -> Catalog:
        return load_catalog([folder], registry)
    return load_


@pytest.fixture
def local_site() -> Inventory:
    return load_site("local")
