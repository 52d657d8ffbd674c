"""Imports go one way, and the CLI's start path stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# module -> what it must never import (prefixes)
FORBIDDEN = {
    "engine/spec.py": ["engine.graph", "engine.walk", "engine.cli", "engine.loader",
                       "engine.inventory", "checks", "sim"],
    "engine/_yaml.py": ["engine.walk", "engine.cli", "engine.spec"],
    "engine/graph.py": ["engine.walk", "engine.cli", "engine.loader"],
    "engine/loader.py": ["engine.walk", "engine.cli"],
    "engine/inventory.py": ["engine.walk", "engine.cli", "engine.loader"],
    "engine/walk.py": ["engine.cli", "checks", "sim"],
}


def imported(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base]) if base else ".".join(parts)
            out.add(base)
    return out


def _hits(names: set[str], forbidden: list[str]) -> list[str]:
    return sorted(n for n in names for f in forbidden if n == f or n.startswith(f + "."))


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_layers_do_not_reach_upward(module):
    assert _hits(imported(REPO / module), FORBIDDEN[module]) == []


def test_engine_never_imports_the_twin_or_kernels():
    for path in (REPO / "engine").rglob("*.py"):
        names = imported(path)
        assert _hits(names, ["kernels", "numba", "fabric", "karabo"]) == [], path
        if path.name != "cli.py":  # the CLI mounts `runbook sim`, `caldb` and `dark`
            assert _hits(names, ["sim", "caldb", "detectors"]) == [], path


def test_checks_never_import_the_cli():
    for path in (REPO / "checks").glob("*.py"):
        assert _hits(imported(path), ["engine.cli", "typer"]) == [], path


def test_kernels_import_only_numpy_and_numba():
    stdlib = set(sys.stdlib_module_names)
    for path in (REPO / "kernels").rglob("*.py"):
        for name in imported(path):
            top = name.split(".")[0]
            assert top in stdlib or top in ("numpy", "numba", "kernels", "__future__"), \
                f"{path}: imports {name}"


@pytest.mark.parametrize("argv", [["--help"], ["validate"]])
def test_cli_start_path_imports_nothing_heavy(argv):
    code = (
        "import sys\n"
        "from engine.cli import app\n"
        f"try:\n    app({argv!r})\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('numba', 'fabric', 'paramiko', 'asyncssh', 'karabo', 'h5py',"
        " 'extra_data', 'sqlalchemy', 'matplotlib') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, timeout=60, check=False)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
