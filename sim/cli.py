"""`runbook sim ...`: start, stop, inspect the facility twin and inject faults into it.

Heavy modules (Karabo, asyncssh, fabric) are imported inside the commands, so that
mounting this app on the `runbook` CLI costs nothing at start-up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["app"]

app = typer.Typer(help="The facility twin: hosts over SSH, Karabo, DAQ, faults.",
                  no_args_is_help=True)

DirOption = Annotated[
    Path | None,
    typer.Option("--dir", help="Twin directory (default: $RUNBOOK_SIM_DIR or <repo>/.twin)."),
]


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


@app.command()
def up(
    instruments: Annotated[str, typer.Option(help="Comma-separated: SPB,MID,FXE,SCS.")] = "SPB",
    scenario: Annotated[Path | None, typer.Option(help="Scenario YAML with faults.")] = None,
    dir: DirOption = None,
    hosts_only: Annotated[bool, typer.Option(help="Hosts and SSH only, no Karabo.")] = False,
    webservice: Annotated[bool, typer.Option(
        help="The offline webservice and its overview (one twin per machine should run "
             "them: the twins' hosts share the machine's process table).")] = True,
) -> None:
    """Start the twin and write the `sim` site (ssh_config, known_hosts, site.yaml)."""
    from engine.errors import RunbookError
    from sim import twin as twinmod

    try:
        started = twinmod.up(dir, instruments.split(","), scenario,
                             karabo=False if hosts_only else None, webservice=webservice)
    except RunbookError as exc:
        raise _fail(exc) from exc
    typer.echo(f"twin up in {started.dir} ({started.timings.get('up_s')} s)")
    typer.echo(f"  instruments: {', '.join(started.instruments)}")
    typer.echo(f"  ssh_config:  {started.ssh_config}")
    typer.echo(f"  site:        {started.site_file}")
    if started.broker_url:
        typer.echo(f"  broker:      {started.broker_url}  topics: "
                   + ", ".join(f"{k}={v}" for k, v in started.topics.items()))
    typer.echo(f"  export RUNBOOK_SIM_DIR={started.dir}")


@app.command()
def down(dir: DirOption = None) -> None:
    """Stop every process that the twin started."""
    from sim import twin as twinmod

    problems = twinmod.down(dir)
    for problem in problems:
        typer.echo(f"error: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo("twin down")


@app.command()
def status(
    dir: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Instruments, hosts and services of the twin, with their liveness."""
    from engine.errors import RunbookError
    from sim import twin as twinmod

    try:
        info = twinmod.status(dir)
    except RunbookError as exc:
        raise _fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(info, indent=1))
        return
    typer.echo(f"twin in {info['dir']}")
    typer.echo(f"instruments: {', '.join(info['instruments'])}")  # type: ignore[arg-type]
    if info["broker"]:
        typer.echo(f"broker: {info['broker']}  topics: {info['topics']}")
    typer.echo(f"hosts (ssh port {info['ssh_port']}):")
    for host in info["hosts"]:  # type: ignore[attr-defined]
        state = "up" if host["ssh"] else "DOWN"
        typer.echo(f"  {host['name']:<20} {host['address']:<12} ssh {state:<4} "
                   f"accounts: {', '.join(host['accounts'])}")
    typer.echo("services:")
    for svc in info["services"]:  # type: ignore[attr-defined]
        typer.echo(f"  {svc['name']:<40} pid {svc['pid']:<8} "
                   f"{'running' if svc['alive'] else 'GONE'}")
    for fault in info["faults"]:  # type: ignore[attr-defined]
        typer.echo(f"fault: {fault}")


@app.command()
def inject(
    scenario: Annotated[Path, typer.Argument(help="Scenario YAML with faults.")],
    dir: DirOption = None,
) -> None:
    """Add the faults of a scenario file to the running twin."""
    from engine.errors import RunbookError
    from sim import twin as twinmod

    try:
        twinmod.inject(dir, scenario)
    except RunbookError as exc:
        raise _fail(exc) from exc
    typer.echo(f"injected {scenario}")


@app.command()
def snapshot(
    dir: DirOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o",
                                                help="Write the snapshot here.")] = None,
    against: Annotated[Path | None, typer.Option(
        help="An earlier snapshot: print what changed since, exit 1 if anything did.")] = None,
) -> None:
    """The twin's observable state: devices (writable properties, state, status),
    daemontools services (pids, up since) and run files; or what changed since one."""
    from engine.errors import RunbookError
    from sim import snapshot as snapmod
    from sim import twin as twinmod

    try:
        now = snapmod.take(twinmod.load(dir or twinmod.default_dir()))
        before = snapmod.Snapshot.from_json(against.read_text()) if against else None
    except (RunbookError, OSError, ValueError, KeyError) as exc:
        raise _fail(exc) from exc
    if output is not None:
        output.write_text(now.to_json())
    if before is None:
        if output is None:
            typer.echo(now.to_json(), nl=False)
        return
    changes = snapmod.diff(before, now)
    for line in changes:
        typer.echo(line)
    typer.echo(f"{len(changes)} change(s) since {against}" if changes
               else f"nothing changed since {against}")
    if changes:
        raise typer.Exit(1)
