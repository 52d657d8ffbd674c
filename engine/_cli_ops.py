"""The operations commands: `runbook health`, `schedule ...`, `serve`, and `audit`."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._cli_common import EXIT_FINDINGS, EXIT_OK, EXIT_UNKNOWN, console, fail, guard

if TYPE_CHECKING:
    from .health import HealthRun
    from .runs import Session

__all__ = ["register"]

SiteOpt = Annotated[str | None, typer.Option("--site", help="Site name (or $RUNBOOK_SITE).")]
PathsOpt = Annotated[list[Path] | None, typer.Option("--runbooks", help="Runbook folders.")]
FileOpt = Annotated[Path | None, typer.Option(
    "--file", help="Schedules file (default $RUNBOOK_SCHEDULES, else ./schedules.yaml).")]

schedule_app = typer.Typer(no_args_is_help=True,
                           help="Health checks on a schedule (schedules.yaml).")


def _instruments(session: Session, instrument: str) -> list[str]:
    if instrument.lower() == "all":
        return session.inventory.instrument_names()
    return [session.inventory.instrument(instrument).name]


def _line(run: HealthRun) -> str:
    mail = (f"mailed to {', '.join(run.mailed)}" if run.mailed
            else "no mail (nothing changed)" if not run.changed else "not mailed")
    news = "".join([f", {len(run.new)} new" if run.new else "",
                    f", {len(run.resolved)} resolved" if run.resolved else ""])
    return f"health {run.instrument} ({run.site}): {run.worst.upper()}{news}; {mail}"


def _print_runs(runs: list[HealthRun]) -> None:
    from rich.table import Table
    con = console()
    for run in runs:
        table = Table("status", "check", "section", "summary", title=_line(run),
                      title_justify="left")
        style = {"ok": "green", "fail": "red", "unknown": "yellow"}
        for c in run.checks:
            table.add_row(f"[{style[c['status']]}]{c['status'].upper()}[/]", c["title"],
                          c["source"], c["summary"])
        con.print(table)


@guard
def health_cmd(instrument: Annotated[str, typer.Option("--instrument", "-i",
                                                       help="e.g. SPB, or all")],
               check: Annotated[list[str] | None, typer.Option(
                   "--check", "-c", help="Only this health check (repeat); default all.")
               ] = None,
               email: Annotated[bool, typer.Option(help="Mail one digest per instrument "
                                                   "when something changed.")] = False,
               always: Annotated[bool, typer.Option(help="Mail even if nothing changed.")
                                 ] = False,
               fmt: Annotated[str, typer.Option("--format", "-f",
                                                help="text or json")] = "text",
               site: SiteOpt = None, runbooks: PathsOpt = None) -> None:
    """Run the health checks (runbooks/health/), keep the result, mail a digest."""
    from .health import health
    from .runs import Session
    from .store import Store
    if fmt not in ("text", "json"):
        fail("--format is text or json")
    session = Session.load(site, runbooks)
    runs = health(session, _instruments(session, instrument), Store.open(), checks=check,
                  email=email, always=always)
    if fmt == "json":
        typer.echo(json.dumps([{**vars(r), "worst": r.worst, "changed": r.changed}
                               for r in runs], indent=2))
    else:
        _print_runs(runs)
    worst = {r.worst for r in runs}
    raise typer.Exit(EXIT_FINDINGS if "fail" in worst else
                     EXIT_UNKNOWN if "unknown" in worst else EXIT_OK)


def _load(file: Path | None) -> Any:
    from .schedule import default_file, load_schedules
    path = file or default_file()
    if not path.exists():
        fail(f"no schedules file {path} (give --file or set RUNBOOK_SCHEDULES)")
    return load_schedules(path)


@schedule_app.command("list")
@guard
def schedule_list(file: FileOpt = None,
                  count: Annotated[int, typer.Option(min=1, max=20)] = 3) -> None:
    """Show each schedule and its next run times."""
    from rich.table import Table

    from .schedule import next_runs
    schedules = _load(file)
    table = Table("schedule", "instrument", "cron", "checks", "mail", "next runs")
    for name, times in next_runs(schedules, count).items():
        s = schedules.schedules[name]
        mail = s.email if s.email is not None else schedules.email
        table.add_row(name, s.instrument, s.cron, ", ".join(s.checks) or "all",
                      ("always" if s.always else "on change") if mail else "no",
                      "\n".join(t.strftime("%Y-%m-%d %H:%M:%S %Z") for t in times))
    console().print(table)


@schedule_app.command("install")
@guard
def schedule_install(file: FileOpt = None, cron: bool = False, systemd: bool = False,
                     site: SiteOpt = None) -> None:
    """Print the crontab lines (--cron) or the systemd units (--systemd) to install."""
    from .schedule import crontab, systemd_units
    if cron == systemd:
        fail("give one of --cron or --systemd")
    schedules = _load(file)
    if cron:
        typer.echo(crontab(schedules, site), nl=False)
        return
    for name, text in systemd_units(schedules, site).items():
        typer.echo(f"# ~/.config/systemd/user/{name}\n{text}")
    typer.echo("# then: systemctl --user daemon-reload && systemctl --user enable --now "
               + " ".join(n for n in systemd_units(schedules, site) if n.endswith(".timer")))


@schedule_app.command("serve")
@guard
def schedule_serve(file: FileOpt = None, site: SiteOpt = None,
                   runbooks: PathsOpt = None) -> None:
    """Run the schedules in this process until SIGTERM or Ctrl-C."""
    from .errors import RunbookError
    from .health import health
    from .runs import Session
    from .schedule import Job, serve
    from .store import Store
    schedules = _load(file)
    Store.open()  # a bad state folder should stop us now, not at the first run

    def run(job: Job) -> None:
        t0 = time.monotonic()
        try:
            session = Session.load(site or schedules.site, runbooks)
            runs = health(session, _instruments(session, job.schedule.instrument),
                          Store.open(), checks=job.schedule.checks or None,
                          email=job.email, always=job.schedule.always)
        except RunbookError as exc:
            print(f"{job.name}: {exc}", file=sys.stderr, flush=True)
            return
        for r in runs:
            print(f"{job.name}: {_line(r)} ({time.monotonic() - t0:.1f} s)", flush=True)

    print(f"serving {len(schedules.schedules)} schedule(s): "
          f"{', '.join(schedules.schedules)}", flush=True)
    serve(schedules, run)


@guard
def serve_cmd(host: Annotated[str, typer.Option(help="Address to bind; loopback by default: "
                                                "the page has no login.")] = "127.0.0.1",
              port: Annotated[int, typer.Option(min=1, max=65535)] = 8090,
              reports: Annotated[Path | None, typer.Option(
                  help="Report tree to list and serve (the dark characterization runs).")
              ] = None,
              state: Annotated[Path | None, typer.Option(
                  help="State file or folder (default: $RUNBOOK_STATE_DIR).")] = None,
              site: SiteOpt = None, runbooks: PathsOpt = None) -> None:
    """The status dashboard: health, jobs, reports, runs, audit, and "diagnose now"."""
    from .web import serve
    serve(host, port, site, reports, state, runbooks=runbooks)


_SPAN = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: float | None = None) -> float:
    """`2h`, `3d`, `30m`, `1w` ago, or a local date or time such as `2026-12-01` or
    `2026-12-01T08:00`, as a Unix time."""
    import re
    from datetime import datetime
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if match:
        return (now if now is not None else time.time()) \
            - float(match[1]) * _SPAN[match[2]]
    try:
        return datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        fail(f"--since wants a date (2026-12-01, 2026-12-01T08:00) or a span (30m, 2h, 3d, "
             f"1w), got {text!r}")


@guard
def audit_cmd(instrument: Annotated[str | None, typer.Option("--instrument", "-i",
                                                             help="e.g. SPB")] = None,
              since: Annotated[str | None, typer.Option(
                  help="From this date (2026-12-01) or this long ago (2h, 3d).")] = None,
              limit: Annotated[int, typer.Option(min=1, max=100_000)] = 50,
              fmt: Annotated[str, typer.Option("--format", "-f",
                                               help="text or json")] = "text") -> None:
    """Who changed what: each action and confirmation of `runbook run`, newest first."""
    from datetime import datetime

    from .store import Store
    if fmt not in ("text", "json"):
        fail("--format is text or json")
    rows = Store.open().audit(limit=limit, instrument=instrument,
                              since=parse_since(since) if since else None)
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:  # one line an entry: greppable, and never cut by the terminal's width
        when = datetime.fromtimestamp(r["at"]).strftime("%Y-%m-%d %H:%M:%S")
        said = f" [{r['confirmation']}]" if r["confirmation"] else ""
        typer.echo(f"{when} {r['user']} {r['site']}/{r['instrument'] or '-'} "
                   f"run {r['run_id']} step {r['step']}: {r['outcome']}{said}: {r['what']}")


@guard
def runs_cmd(instrument: Annotated[str | None, typer.Option("--instrument", "-i",
                                                            help="e.g. SPB")] = None,
             limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
             fmt: Annotated[str, typer.Option("--format", "-f",
                                              help="text or json")] = "text") -> None:
    """The procedure runs of the journal, newest first, with their states."""
    from dataclasses import asdict
    from datetime import datetime

    from .journal import list_runs
    from .locks import alive, holders
    from .store import Store
    if fmt not in ("text", "json"):
        fail("--format is text or json")
    store = Store.open()
    held = {h.run_id for h in holders(store) if alive(h)}
    rows: list[dict[str, Any]] = []
    for run in list_runs(store, limit, instrument):
        state = run.state
        if state == "running" and run.run_id not in held:
            state = "died"  # its process ended without a word: resumable
        rows.append({**asdict(run), "state": state})
    if fmt == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        when = datetime.fromtimestamp(r["started"]).strftime("%Y-%m-%d %H:%M:%S")
        hint = f"  (runbook resume {r['run_id']})" if r["state"] in ("died", "interrupted") \
            else ""
        typer.echo(f"{r['run_id']} {when} {r['user']} {r['site']}/{r['instrument'] or '-'} "
                   f"{r['runbook']}: {r['state']}, {r['steps_done']} step(s) done"
                   f"{', resumed ' + str(r['resumes']) + 'x' if r['resumes'] else ''}"
                   f"{': ' + r['note'] if r['note'] else ''}{hint}")


def register(app: typer.Typer) -> None:
    app.command("health")(health_cmd)
    app.command("audit")(audit_cmd)
    app.command("runs")(runs_cmd)
    app.command("serve")(serve_cmd)
    app.add_typer(schedule_app, name="schedule")
