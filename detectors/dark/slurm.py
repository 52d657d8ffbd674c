"""``runbook dark --slurm``: one sbatch script per block of modules, then a report job.

As the facility does on Maxwell: the module jobs run side by side, each characterizing
and injecting its modules into ``<report>/parts``; the report job waits for all of them
(``--dependency=afterok:...``) and renders the report from the parts.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from detectors.dark.errors import SlurmError

__all__ = ["SlurmPlan", "module_blocks", "write_scripts", "submit"]


@dataclass(frozen=True)
class SlurmPlan:
    """The scripts written by ``write_scripts``: one per module block, and the report's."""

    module_scripts: tuple[Path, ...]
    report_script: Path


def module_blocks(modules: Sequence[int], per_job: int) -> list[tuple[int, ...]]:
    """``[0..15], 4`` -> ``[(0, 1, 2, 3), (4, 5, 6, 7), ...]``."""
    if per_job < 1:
        raise SlurmError(f"modules per job must be at least 1, not {per_job}")
    mods = list(modules)
    return [tuple(mods[i:i + per_job]) for i in range(0, len(mods), per_job)]


def _script(name: str, log_dir: Path, argv: Sequence[str], partition: str | None,
            time_limit: str, workdir: Path) -> str:
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}",
             f"#SBATCH --output={log_dir}/%x-%j.out", "#SBATCH --nodes=1",
             f"#SBATCH --time={time_limit}"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    lines += ["set -euo pipefail", f"cd {shlex.quote(str(workdir))}",
              f"exec {shlex.join(argv)}", ""]
    return "\n".join(lines)


def write_scripts(folder: Path, job_name: str, args: Sequence[str], modules: Sequence[int],
                  *, per_job: int = 4, partition: str | None = None,
                  time_limit: str = "02:00:00", python: str | None = None,
                  workdir: Path | None = None) -> SlurmPlan:
    """Write the scripts into ``folder``; ``args`` are the dark command's options.

    Each module job runs ``python -m detectors.dark <args> --phase modules --modules ...``,
    the report job ``... --phase report``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = [python or sys.executable, "-m", "detectors.dark", *args]
    workdir = workdir or Path.cwd()
    scripts = []
    for block in module_blocks(modules, per_job):
        label = f"m{block[0]}" if len(block) == 1 else f"m{block[0]}-{block[-1]}"
        argv = [*base, "--phase", "modules", "--modules", ",".join(map(str, block))]
        path = folder / f"{job_name}_{label}.sh"
        path.write_text(_script(f"{job_name}_{label}", folder, argv, partition, time_limit,
                                workdir))
        scripts.append(path)
    report = folder / f"{job_name}_report.sh"
    report.write_text(_script(f"{job_name}_report", folder, [*base, "--phase", "report"],
                              partition, "00:30:00", workdir))
    return SlurmPlan(tuple(scripts), report)


def _sbatch(sbatch: str, extra: list[str], script: Path, timeout: float) -> str:
    cmd = [sbatch, "--parsable", *extra, str(script)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"sbatch did not answer within {timeout:g} s: {shlex.join(cmd)}") from exc
    except OSError as exc:
        raise SlurmError(f"cannot run {sbatch}: {exc}") from exc
    if proc.returncode != 0:
        raise SlurmError(
            f"sbatch refused {script.name} (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip() or 'no message'}; is a Slurm controller "
            "reachable from this host?"
        )
    job_id = proc.stdout.strip().split(";", 1)[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch gave no job id for {script.name}: {proc.stdout!r}")
    return job_id


def submit(plan: SlurmPlan, *, sbatch: str = "sbatch", timeout: float = 60.0) -> list[str]:
    """Submit the module jobs, then the report job after them; return the job ids."""
    found = shutil.which(sbatch)
    if found is None:
        raise SlurmError(
            f"{sbatch!r} is not installed on this host: submit from a Maxwell login node, "
            "or run without --slurm to characterize here"
        )
    ids = [_sbatch(found, [], script, timeout) for script in plan.module_scripts]
    ids.append(_sbatch(found, [f"--dependency=afterok:{':'.join(ids)}"], plan.report_script,
                       timeout))
    return ids
