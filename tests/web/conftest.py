"""A dashboard over a state file in tmp_path, with a lab diagnosis that finds something."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from engine.loader import default_paths
from engine.runs import Session
from engine.store import Store
from tests.web._kit import LAB_MARKER


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "s.sqlite")


@pytest.fixture
def lab_runbooks(tmp_path: Path) -> Path:
    """A runbook folder holding `lab-marker`, whose marker file does not exist."""
    folder = tmp_path / "lab-runbooks"
    folder.mkdir()
    marker = tmp_path / "marker"
    (folder / "lab-marker.yaml").write_text(LAB_MARKER.replace("MARKER", str(marker)),
                                            encoding="utf-8")
    return folder


@pytest.fixture
def lab_session(lab_runbooks: Path) -> Callable[[], Session]:
    """The `local` site with the repository's runbooks and `lab-marker`."""
    return lambda: Session.load("local", [*default_paths(), lab_runbooks])
