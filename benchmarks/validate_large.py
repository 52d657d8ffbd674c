"""Validating one very large runbook (issue 12, Large input: 10,000 steps "well under a second").

    .venv/bin/python benchmarks/validate_large.py [--steps 10000] [--runs 5] [--cli]

Writes a diagnosis runbook of N steps into a temporary folder, shaped like the project's
own: blocks of ssh.karabo_check, ssh.log_grep, ssh.command and a wait on ssh.process,
an `all` over three of them, and findings, with templated hosts, accounts and paths that
the registry validates. Every step is reachable and the file is valid. Then it validates
the file as `runbook validate` does (`engine.loader.load_catalog` with the real registry)
and prints the minimum and median wall and CPU time of the runs, and the CPU time of each
phase (YAML, model, graph, templates, registry) in one more run.

Three shapes are timed: `usual` (templates repeat, as hosts and accounts do), `distinct`
(every templated string differs, but each is a dotted name such as `{{ params.folder }}`)
and `jinja` (every string differs and needs Jinja's parser, e.g. `{{ a ~ b }}`): the last
is the worst case for the template phase. With `--cli`, `runbook validate FILE` is also
timed as a new process (start-up and imports included). The load average is printed,
since the machine's other work slows every figure: on a shared machine the CPU times say
more than the wall times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from engine import _templates_static, _yaml, loader  # noqa: E402
from engine.registry import default_registry  # noqa: E402
from engine.spec import Runbook  # noqa: E402

SHAPES = ("usual", "distinct", "jinja")


def _path(shape: str, i: int) -> str:
    if shape == "usual":
        return "{{ params.folder }}/raw"
    if shape == "distinct":
        return "{{ params.folder }}/r" + f"{i:04d}"
    return "{{ params.folder ~ '/r" + f"{i:04d}" + "' }}"


def write_runbook(folder: Path, steps: int, shape: str) -> Path:
    """A valid diagnosis of about `steps` steps, in blocks of ten."""
    blocks = max(1, steps // 10)
    out = ['id: large', 'title: "A generated runbook of many steps"', "kind: diagnosis",
           'source: "11.1"', "params:", "  instrument: {type: instrument}",
           "  folder: {type: str, default: /gpfs/exfel/exp}", "start: b0-karabo", "steps:"]
    user = '"{{ vars.account }}"'
    for b in range(blocks):
        nxt = f"b{b + 1}-karabo" if b + 1 < blocks else "all-good"
        h = '"{{ instrument.groups.cal_restart[' + str(b % 8) + '] }}"'
        out += [
            f"  b{b}-karabo:", '    source: "11.1#1"', f"    title: Karabo on host {b}",
            "    check: ssh.karabo_check",
            f"    with: {{host: {h}, user: {user}, servers: [webserver]}}",
            f"    on: {{ok: b{b}-hypotheses, fail: b{b}-down, unknown: b{b}-unreachable}}",
            f"  b{b}-hypotheses:", '    source: "11.3"', f"    all: [b{b}-log, b{b}-run, b{b}-ls]",
            f"    next: b{b}-wait",
            f"  b{b}-log:", '    source: "11.3#1"', "    check: ssh.log_grep",
            f"    with: {{host: {h}, user: {user}, path: \"{_path(shape, b)}/current\", "
            "pattern: Resource temporarily unavailable, expect: absent}",
            f"    on: {{ok: end, fail: b{b}-constants, unknown: end}}",
            f"  b{b}-run:", '    source: "11.1#2"', "    check: ssh.service_run_file",
            f"    with: {{host: {h}, user: {user}, service: webserver, port: 8080}}",
            f"    on: {{ok: end, fail: b{b}-down, unknown: end}}",
            f"  b{b}-ls:", '    source: "10.1"', "    check: ssh.command",
            f"    with: {{host: {h}, user: {user}, argv: [ls, -al, \"{_path(shape, b)}\"]}}",
            "    timeout: 20",
            f"    on: {{ok: end, fail: b{b}-down, unknown: end}}",
            f"  b{b}-wait:", '    source: "11.1#3"', "    wait: ssh.process",
            f"    with: {{host: {h}, user: {user}, pattern: 'karabo-webserver'}}",
            "    timeout: 30", "    interval: 2",
            f"    on: {{ok: {nxt}, timeout: b{b}-down}}",
            f"  b{b}-down:", '    source: "11.1"', f"    finding: Webserver {b} is down",
            f"    evidence: [b{b}-karabo]", "    remedy: Start it with karabo-start.",
            f"  b{b}-unreachable:", '    source: "11.1"',
            f"    finding: Host {b} does not answer", "    severity: warning",
            f"  b{b}-constants:", '    source: "11.3"',
            f"    finding: Constants of block {b} could not be found",
            f"    evidence: [b{b}-log]", '    contact: "{{ vars.support_mail }}"',
            f"  b{b}-note:", '    source: "11.3"', "    check: ssh.command",
            f"    with: {{host: {h}, user: {user}, argv: [\"true\"]}}",
            f"    on: {{ok: b{b}-down, fail: b{b}-down, unknown: b{b}-down}}",
        ]
        out[out.index(f"    on: {{ok: end, fail: b{b}-constants, unknown: end}}")] = \
            f"    on: {{ok: end, fail: b{b}-constants, unknown: b{b}-note}}"
    out += ["  all-good:", '    source: "11.1"', "    finding: Every block is fine",
            "    severity: info"]
    path = folder / "large.yaml"
    path.write_text("\n".join(out) + "\n")
    return path


def _timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - w, time.process_time() - c


def phases(path: Path) -> dict[str, float]:
    """CPU seconds of each phase of `load_catalog`, called one by one as it calls them
    (the garbage collector paused, as there)."""
    registry = default_registry()
    out: dict[str, float] = {}
    with loader._no_collection():
        (data, positions), _, out["yaml"] = _timed(lambda: _yaml.load_yaml(path, lazy=True))
        runbook, _, out["model"] = _timed(lambda: Runbook.model_validate(data))
        lr = loader.LoadedRunbook(runbook, path, positions, "")
        catalog = loader.Catalog(runbooks={runbook.id: lr})
        _, _, out["graph"] = _timed(lambda: loader._graph_problems(lr, catalog))
        _templates_static._facts.cache_clear()
        _, _, out["templates"] = _timed(lambda: _templates_static.template_problems(lr))
        _, _, out["registry"] = _timed(
            lambda: loader._registry_problems(lr, registry, catalog))
    return out


def measure(path: Path, runs: int) -> dict[str, Any]:
    registry = default_registry()
    walls, cpus = [], []
    for _ in range(runs):
        _templates_static._facts.cache_clear()   # a new process starts with none
        catalog, wall, cpu = _timed(lambda: loader.load_catalog([path], registry))
        if catalog.problems:
            raise SystemExit("the generated runbook has problems:\n"
                             + "\n".join(catalog.problems[:5]))
        walls.append(wall)
        cpus.append(cpu)
    steps = len(catalog.runbooks["large"].runbook.steps)
    return {"steps": steps, "bytes": path.stat().st_size, "walls": walls, "cpus": cpus,
            "phases": phases(path)}


def cli(path: Path) -> float:
    start = time.perf_counter()
    runbook = Path(sys.executable).parent / "runbook"
    done = subprocess.run([str(runbook), "validate", str(path)], cwd=REPO,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"runbook validate failed: {done.stdout}{done.stderr}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cli", action="store_true", help="also time `runbook validate`")
    args = parser.parse_args(argv)
    default_registry()      # imported once, as a long-lived process would have it
    print(f"validating a runbook of about {args.steps:,} steps, {args.runs} run(s) per "
          f"shape; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in SHAPES:
            folder = Path(tmp) / shape
            folder.mkdir()
            path = write_runbook(folder, args.steps, shape)
            got = measure(path, args.runs)
            walls, cpus = got["walls"], got["cpus"]
            print(f"  {shape:<9} {got['steps']:,} steps, {got['bytes'] / 2**20:.1f} MiB: "
                  f"wall min {min(walls):.3f} s, median {statistics.median(walls):.3f} s; "
                  f"CPU min {min(cpus):.3f} s, median {statistics.median(cpus):.3f} s")
            print("            phases (CPU, one more run): " + ", ".join(
                f"{k} {v:.3f} s" for k, v in got["phases"].items()))
            if args.cli:
                print(f"            `runbook validate` as a new process: {cli(path):.3f} s")
            sys.stdout.flush()
    print(f"  load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
