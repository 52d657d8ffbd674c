"""``runbook dark``: dark characterization of a detector from its raw dark runs.

``runbook dark --instrument SPB --detector SPB_DET_AGIPD1M-1 --runs 67,68,69
--proposal 900146 --cycle 202031`` checks the runs, characterizes them module by module,
injects Offset, Noise, BadPixelsDark (and ThresholdsDark for AGIPD) and writes the report
in the site's report-path pattern. ``--slurm`` submits the same work as Slurm jobs.
Heavy modules are imported inside the command, so ``runbook --help`` stays fast.
"""

from __future__ import annotations

import enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from engine.errors import RunbookError

if TYPE_CHECKING:
    from detectors.dark.job import DarkJob

__all__ = ["app", "dark"]

app = typer.Typer(help="Dark characterization: raw dark runs -> constants in the DB + report.",
                  add_completion=False, subcommand_metavar="")


class Phase(enum.StrEnum):
    all = "all"
    modules = "modules"
    report = "report"


def _forward(**options: object) -> list[str]:
    """The options again as arguments, for the Slurm jobs (only those that were given)."""
    out: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False or value == []:
            continue
        if value is True:
            out.append(flag)
        elif isinstance(value, list):
            for item in value:
                out += [flag, str(item)]
        else:
            out += [flag, str(value)]
    return out


@app.callback(invoke_without_command=True)
def dark(
    instrument: Annotated[str, typer.Option(help="Instrument, e.g. SPB")],
    detector: Annotated[str, typer.Option(help="karabo_id (SPB_DET_AGIPD1M-1) or inventory key")],
    runs: Annotated[str, typer.Option(help="Dark runs, high/medium/low gain: 67,68,69")],
    proposal: Annotated[int, typer.Option(help="Proposal number, e.g. 900146")],
    cycle: Annotated[str | None, typer.Option(
        help="Cycle (202031), for the site's raw_path")] = None,
    modules: Annotated[str | None, typer.Option(help="Modules, e.g. 0-3,8 (default: all)")] = None,
    site: Annotated[str, typer.Option(help="Inventory site")] = "xfel",
    detector_type: Annotated[str | None, typer.Option(
        help="Detector type when the detector is not in the inventory")] = None,
    raw_root: Annotated[Path | None, typer.Option(
        help="The proposal's raw folder holding r0067... (default: the site's raw_path)")] = None,
    report_root: Annotated[Path | None, typer.Option(
        help="Replaces the root of the site's report_path (up to {instrument})")] = None,
    db: Annotated[str | None, typer.Option(
        "--db", help="Calibration DB URL [env RUNBOOK_CALDB]")] = None,
    store_root: Annotated[Path | None, typer.Option(
        help="Constant files [env RUNBOOK_CALDB_STORE]")] = None,
    seed: Annotated[Path | None, typer.Option(
        help="Load this caldb seed file (runbook caldb seed format) first")] = None,
    condition: Annotated[list[str] | None, typer.Option(
        "--condition", "-C", help="Operating condition override: sensor_bias_voltage=200")] = None,
    trains: Annotated[int | None, typer.Option(help="Use only the first N trains per run")] = None,
    max_block_mib: Annotated[float, typer.Option(
        help="Memory for one block of memory cells (three runs)")] = 2048.0,
    slurm: Annotated[bool, typer.Option(help="Submit to Slurm with sbatch instead")] = False,
    modules_per_job: Annotated[int, typer.Option(help="Modules per Slurm job")] = 4,
    partition: Annotated[str | None, typer.Option(help="Slurm partition")] = None,
    phase: Annotated[Phase, typer.Option(hidden=True)] = Phase.all,
    report_dir: Annotated[Path | None, typer.Option(hidden=True)] = None,
    run_dir: Annotated[list[Path] | None, typer.Option(hidden=True)] = None,
) -> None:
    """Characterize dark runs, inject the constants and write the report."""
    options = dict(locals())
    console = Console(soft_wrap=True, highlight=False)
    try:
        _run(console, options)
    except RunbookError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _run(console: Console, o: dict[str, Any]) -> None:
    from detectors.dark.job import render, run_dark, run_modules
    from detectors.dark.resolve import resolve_job

    job = resolve_job(
        instrument=o["instrument"], detector=o["detector"], runs=o["runs"],
        proposal=o["proposal"], site=o["site"], cycle=o["cycle"], modules=o["modules"],
        detector_type=o["detector_type"], raw_root=o["raw_root"], run_dirs=o["run_dir"],
        report_root=o["report_root"], report_folder=o["report_dir"],
        conditions=o["condition"] or [], trains=o["trains"], max_block_mib=o["max_block_mib"],
        db_url=o["db"], store_root=o["store_root"])
    if o["seed"] is not None:
        _seed(job.db_url, job.store_root, o["seed"])
    phase = o["phase"]
    if o["slurm"]:
        _submit(console, job, o)
    elif phase == Phase.report:
        console.print(f"Report: {render(job.report_dir)}")
    elif phase == Phase.modules:
        run_modules(job, console)
    else:
        result = run_dark(job, console)
        console.print(f"Report: {result.index}")
        console.print(f"{result.count('injected')} constant(s) injected, "
                      f"{result.count('taken')} already taken")


def _seed(db_url: str | None, store_root: Path | None, path: Path) -> None:
    from ruamel.yaml import YAML, YAMLError

    from caldb.store import CalDB

    try:
        spec = YAML(typ="safe", pure=True).load(path.read_text())
    except (OSError, YAMLError) as exc:
        raise RunbookError(f"cannot read the seed file {path}: {exc}") from exc
    with CalDB.open(db_url, store_root) as store:
        store.seed(spec)


def _submit(console: Console, job: DarkJob, o: dict[str, Any]) -> None:
    from caldb.store import default_db_url, default_store_root
    from detectors.dark._paths import runs_label
    from detectors.dark.job import check_runs
    from detectors.dark.slurm import submit, write_scripts

    runs = check_runs(job)
    args = _forward(instrument=job.instrument, detector=job.karabo_id,
                    detector_type=job.detector.name, runs=",".join(map(str, job.runs)),
                    proposal=job.proposal, site=o["site"], db=job.db_url or default_db_url(),
                    store_root=job.store_root or default_store_root(),
                    condition=list(o["condition"] or []),
                    trains=job.trains, max_block_mib=job.max_block_mib,
                    report_dir=job.report_dir)
    for path in job.run_dirs:
        args += ["--run-dir", str(path)]
    name = f"dark_{job.proposal}_{runs_label(job.runs)}"
    plan = write_scripts(job.report_dir / "slurm", name, args, runs.modules,
                         per_job=o["modules_per_job"], partition=o["partition"])
    ids = submit(plan)
    console.print(f"Submitted {len(ids) - 1} module job(s) and the report job: {', '.join(ids)}")
    console.print(f"Report (when the jobs are done): {job.report_dir}/index.html")
