"""Shared fixtures: runbooks written into tmp folders, a test registry, the local site."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.inventory import Inventory, load_site
from engine.loader import Catalog, load_catalog
from engine.registry import Registry

# `make test` runs three pytest-xdist workers (`-n 3 --dist loadgroup`) on two cores: the
# twin's tests mostly wait for devices.  The twin's modules come in fixed groups, each
# run in file order on one worker with its own session twin, so that the order of faults
# on a twin is the same in every run; any other file is a group of its own, run by
# whichever worker is free.  Groups balanced by one run's `--durations=0`.
TWIN_GROUPS = {
    "twin-a": ("test_diagnose_e2e.py", "test_dry_run_twin.py", "test_faults_11_2.py",
               "test_faults_11_4.py", "test_faults_11_5_7.py", "test_twin_ssh.py"),
    "twin-b": ("test_faults_10.py", "test_faults_11_1.py", "test_faults_11_3.py",
               "test_restart_online.py", "test_resume_twin.py", "test_health.py",
               "test_twin_hosts.py", "test_twin_karabo.py"),
    # Twins with the webservice, one at a time: the twins share the machine's process
    # table, and these tests kill and count webservice.py by pattern.
    "offline": ("test_offline_4_8_9.py", "test_offline_faults.py", "test_offline_chain.py"),
}
_GROUP_OF = {f"tests/twin/{name}": group for group, names in TWIN_GROUPS.items()
             for name in names}


def pytest_configure(config: pytest.Config) -> None:
    """Runs, health history and audit go to a state file of this session, never $HOME's."""
    if "RUNBOOK_STATE_DIR" not in os.environ:
        os.environ["RUNBOOK_STATE_DIR"] = tempfile.mkdtemp(prefix="runbook-state-")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its xdist group; the twin groups go first (the longest work)."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers
        return
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(_GROUP_OF.get(path, path)))
    items.sort(key=lambda item: item.nodeid.split("::", 1)[0] not in _GROUP_OF)


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
