"""The `runbook` command line.

Exit codes: 0 nothing found, 1 findings (or a run that stopped), 2 unknowns only,
3 usage or validation error. Heavy modules (pydantic models, networkx, transports) are
imported inside the commands, so that `runbook --help` starts fast.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:

    from .inventory import Inventory
    from .loader import Catalog
    from .registry import Registry

__all__ = ["app", "main", "EXIT_OK", "EXIT_FINDINGS", "EXIT_UNKNOWN", "EXIT_USAGE"]

from ._cli_common import EXIT_FINDINGS, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE
from ._cli_common import console as _console
from ._cli_common import fail as _fail
from ._cli_common import guard as _guard
from ._cli_ops import register as register_ops


class _Group(TyperGroup):
    """Usage errors exit 3, not click's 2, which means 'unknowns only' here."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        standalone = kwargs.pop("standalone_mode", True)
        try:
            kwargs["standalone_mode"] = False
            rv = super().main(*args, **kwargs)
        except Exception as exc:
            # click's own exceptions (typer vendors click): they know how to show themselves
            if not standalone or not hasattr(exc, "show"):
                raise
            exc.show()
            sys.exit(EXIT_USAGE)
        except KeyboardInterrupt:
            typer.echo("Aborted.", err=True)
            sys.exit(130)
        if standalone:
            sys.exit(rv if isinstance(rv, int) else 0)
        return rv


app = typer.Typer(cls=_Group, no_args_is_help=True, add_completion=False,
                  help="The European XFEL Detector Support Guidelines as runbooks.",
                  pretty_exceptions_enable=False)


class Fmt(StrEnum):
    text = "text"
    json = "json"
    markdown = "markdown"
    html = "html"
    pdf = "pdf"


class DocFmt(StrEnum):
    """Plans and coverage: a table for people, JSON for tools."""

    text = "text"
    json = "json"


class GraphFmt(StrEnum):
    dot = "dot"
    mermaid = "mermaid"


SiteOpt = Annotated[str | None, typer.Option("--site", help="Site name (or $RUNBOOK_SITE).")]
InstrOpt = Annotated[str | None, typer.Option("--instrument", "-i", help="e.g. SPB")]
ParamOpt = Annotated[list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE")]
PathsOpt = Annotated[list[Path] | None, typer.Option("--runbooks", help="Runbook folders.")]


def _registry() -> Registry:
    from .registry import default_registry
    return default_registry()


def _catalog(paths: list[Path] | None, strict: bool = True) -> Catalog:
    from .loader import load_catalog
    catalog = load_catalog(paths, _registry())
    if strict:
        catalog.raise_problems()
    return catalog


def _inventory(site: str | None) -> Inventory:
    from .inventory import load_site, site_name
    return load_site(site_name(site))


def _params(items: list[str] | None, instrument: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            _fail(f"--param wants NAME=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = value
    return out


def _with_instrument(catalog: Catalog, runbook_id: str, params: dict[str, Any],
                     instrument: str | None, inventory: Inventory) -> str | None:
    rb = catalog.get(runbook_id).runbook
    wants = [n for n, p in rb.params.items() if p.type == "instrument"]
    if instrument is not None:
        instrument = inventory.instrument(instrument).name
        for name in wants:
            params.setdefault(name, instrument)
    elif wants and all(n not in params for n in wants):
        _fail(f"runbook '{runbook_id}' needs --instrument")
    return instrument


def _confirm(question: str) -> bool:
    """Ask on the terminal; no answer (end of input) is a no."""
    try:
        return bool(typer.confirm(question, default=False))
    except (typer.Abort, EOFError, RuntimeError):
        return False


@app.command("list")
@_guard
def list_cmd(runbooks: PathsOpt = None) -> None:
    """List the runbooks."""
    from rich.table import Table
    catalog = _catalog(runbooks, strict=False)
    table = Table("id", "kind", "source", "status", "title")
    for rid, lr in sorted(catalog.runbooks.items()):
        rb = lr.runbook
        table.add_row(rid, rb.kind, rb.source, rb.status, rb.title)
    _console().print(table)


@app.command()
@_guard
def show(runbook_id: str, runbooks: PathsOpt = None) -> None:
    """Show a runbook's parameters and steps."""
    from .spec import step_kind
    lr = _catalog(runbooks).get(runbook_id)
    rb, con = lr.runbook, _console()
    con.print(f"[bold]{rb.id}[/] — {rb.title} ({rb.kind}, section {rb.source}, {rb.status})")
    con.print(f"file: {lr.path}")
    if rb.description:
        con.print(rb.description.strip())
    for name, p in rb.params.items():
        con.print(f"  param {name}: {p.type}" + ("" if p.required else f" = {p.default!r}"))
    for sid, step in rb.steps.items():
        mark = "→ " if sid == rb.start else "  "
        con.print(f"{mark}{sid} [dim]({step_kind(step)}, {step.source})[/] {step.title}")


@app.command()
def validate(paths: Annotated[list[Path] | None, typer.Argument()] = None) -> None:
    """Check runbooks: YAML, model, graph, check names and their parameters, templates."""
    from .errors import RunbookError
    from .loader import load_catalog
    try:
        catalog = load_catalog(paths, _registry())
    except RunbookError as exc:
        _fail(str(exc))
    for warning in catalog.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for line in catalog.problems:
        typer.echo(line, err=True)
    if catalog.problems:
        typer.echo(f"{len(catalog.problems)} problem(s) in {len(catalog.runbooks)} "
                   "runbook(s)", err=True)
        raise typer.Exit(EXIT_USAGE)
    drafts = sum(lr.runbook.status == "draft" for lr in catalog.runbooks.values())
    typer.echo(f"{len(catalog.runbooks)} runbook(s) valid"
               + (f", {drafts} draft(s) with {len(catalog.warnings)} pending name(s)"
                  if drafts else ""))


@app.command()
@_guard
def graph(runbook_id: str, fmt: Annotated[GraphFmt, typer.Option("--format")] = GraphFmt.dot,
          runbooks: PathsOpt = None) -> None:
    """Print a runbook's graph as DOT or Mermaid."""
    from .graph import RunbookGraph
    g = RunbookGraph.of(_catalog(runbooks).get(runbook_id).runbook)
    typer.echo(g.to_dot() if fmt == GraphFmt.dot else g.to_mermaid(), nl=False)


@app.command()
def schema() -> None:
    """Print the JSON Schema of the runbook format (for editors)."""
    import json

    from .spec import Runbook
    typer.echo(json.dumps(Runbook.model_json_schema(by_alias=True), indent=2))


@app.command("inventory")
@_guard
def inventory_cmd(instrument: InstrOpt = None, site: SiteOpt = None) -> None:
    """Show the site's instruments, groups and hosts."""
    from rich.tree import Tree
    inv = _inventory(site)
    names = [inv.instrument(instrument).name] if instrument else inv.instrument_names()
    root = Tree(f"site [bold]{inv.name}[/]")
    for name in names:
        ctx = inv.context(name)["instrument"]
        node = root.add(f"[bold]{name}[/] (SASE {ctx.get('sase')})")
        for key, value in ctx.get("karabo", {}).items():
            node.add(f"karabo.{key}: {value}")
        for key, value in ctx.get("devices", {}).items():
            node.add(f"device {key}: {value}")
        for group, hosts in ctx.get("groups", {}).items():
            node.add(f"group {group}: {', '.join(hosts)}")
    _console().print(root)


def _store() -> Any:
    """The state file, or None with a warning: a diagnosis must work on a read-only home."""
    from .errors import RunbookError
    from .store import Store
    try:
        return Store.open()
    except RunbookError as exc:
        typer.echo(f"warning: not recorded: {exc}", err=True)
        return None


def _run_store() -> Any:
    """A run cannot go on without its state file: that holds its lock and its audit."""
    from .store import Store
    return Store.open()


def _walk(mode: str, runbook_id: str, instrument: str | None, site: str | None,
          param: list[str] | dict[str, Any] | None, runbooks: list[Path] | None,
          **kw: Any) -> Any:
    from .runs import Session, walk
    catalog = _catalog(runbooks)
    inv = _inventory(site)
    params = dict(param) if isinstance(param, dict) else _params(param, instrument)
    instrument = _with_instrument(catalog, runbook_id, params, instrument, inv)
    session = Session(catalog, _registry(), inv)
    store = None if mode == "plan" else _store() if mode == "diagnose" else _run_store()
    report, _ = walk(session, mode, runbook_id, params,  # type: ignore[arg-type]
                     instrument=instrument, confirm=_confirm, say=typer.echo,
                     store=store, **kw)
    return catalog, inv, params, report


OutputOpt = Annotated[Path | None, typer.Option(
    "--output", "-o", help="Write the report to this file (needed for --format pdf).")]


def _emit(report: Any, fmt: Fmt, title: str, output: Path | None = None) -> None:
    from . import report as forms
    if fmt == Fmt.text:
        if output is not None:
            _fail("--output wants --format markdown, html, json or pdf")
        forms.print_report(report, _console(), title)
        return
    if fmt == Fmt.pdf:
        if output is None:
            _fail("--format pdf needs --output FILE")
        output.write_bytes(forms.to_pdf(report, title))
        typer.echo(f"report written to {output}", err=True)
        return
    text = {Fmt.json: lambda: forms.to_json(report),
            Fmt.markdown: lambda: forms.to_markdown(report, title),
            Fmt.html: lambda: forms.to_html(report, title)}[fmt]()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"report written to {output}", err=True)


@app.command()
@_guard
def diagnose(runbook_id: str, instrument: InstrOpt = None, site: SiteOpt = None,
             param: ParamOpt = None,
             fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.text,
             concurrency: Annotated[int, typer.Option(min=1, max=1024)] = 32,
             output: OutputOpt = None, runbooks: PathsOpt = None) -> None:
    """Run a troubleshooting tree's read-only checks and report the findings."""
    catalog, _, _, report = _walk("diagnose", runbook_id, instrument, site, param, runbooks,
                                  concurrency=concurrency)
    _emit(report, fmt, f"{catalog.get(runbook_id).runbook.title} [{runbook_id}]", output)
    raise typer.Exit(report.exit_code)


@app.command()
@_guard
def plan(runbook_id: str, instrument: InstrOpt = None, site: SiteOpt = None,
         param: ParamOpt = None, probe: bool = False,
         output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
         fmt: Annotated[DocFmt, typer.Option("--format", "-f")] = DocFmt.text,
         runbooks: PathsOpt = None) -> None:
    """Resolve every step (hosts, commands, slots), change nothing, save the plan."""
    import json

    from .plan import fingerprints, plan_document, save_plan
    from .report import print_plan
    catalog, inv, params, report = _walk("plan", runbook_id, instrument, site, param,
                                         runbooks, probe=probe)
    doc = plan_document(report, fingerprints(catalog, inv, runbook_id, report.params,
                                             report.instrument))
    if output is not None:
        save_plan(doc, output)
    if fmt == DocFmt.json:
        typer.echo(json.dumps(doc, indent=2, default=str))
    else:
        print_plan(doc, _console())
        if output is not None:
            typer.echo(f"plan saved to {output}; run it with: runbook run --plan {output}")


@app.command()
@_guard
def run(runbook_id: Annotated[str | None, typer.Argument()] = None,
        plan_file: Annotated[Path | None, typer.Option("--plan")] = None,
        instrument: InstrOpt = None, site: SiteOpt = None, param: ParamOpt = None,
        yes: Annotated[bool, typer.Option("--yes", "-y",
                                          help="Do not ask before danger steps.")] = False,
        fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.text,
        output: OutputOpt = None, runbooks: PathsOpt = None) -> None:
    """Execute a procedure, asking before danger and manual steps."""
    from .plan import fingerprints, load_plan, verify_plan
    params_list = param
    if plan_file is not None:
        if runbook_id is not None or param:
            _fail("give either a runbook id (with its params) or --plan FILE, not both")
        doc = load_plan(plan_file)
        runbook_id, instrument, site = doc["runbook"], doc["instrument"], doc["site"]
        params_list = [f"{k}={v}" for k, v in doc["params"].items() if v is not None]
        catalog, inv = _catalog(runbooks), _inventory(site)
        verify_plan(doc, fingerprints(catalog, inv, runbook_id, doc["params"], instrument))
    if runbook_id is None:
        _fail("name a runbook or give --plan FILE")
    catalog, _, _, report = _walk("run", runbook_id, instrument, site, params_list, runbooks,
                                  yes=yes)
    _emit(report, fmt, f"Run of {runbook_id}", output)
    raise typer.Exit(report.exit_code)


@app.command()
@_guard
def resume(run_id: str, param: ParamOpt = None,
           fmt: Annotated[Fmt, typer.Option("--format", "-f")] = Fmt.text,
           output: OutputOpt = None, runbooks: PathsOpt = None) -> None:
    """Go on with an interrupted run from its first unfinished step (`runbook runs`).
    A parameter that held a secret is masked in the journal: give it again with -p."""
    from . import journal
    from .store import Store
    was = journal.load_run(Store.open(), run_id)
    params = {**was.params, **_params(param, None)}
    masked = journal.masked_params(params)
    if masked:
        _fail(f"run {run_id}: the journal keeps {', '.join(masked)} masked (a secret of the "
              f"site); give {'them' if len(masked) > 1 else 'it'} again: "
              + " ".join(f"-p {m}=..." for m in masked))
    typer.echo(f"resuming run {run_id}: {was.runbook} on {was.site}/{was.instrument or '-'}, "
               f"{was.steps_done} step(s) done, {was.state}", err=True)
    _, _, _, report = _walk("run", was.runbook, was.instrument, was.site, params,
                            runbooks, yes=was.yes, resume=run_id)
    _emit(report, fmt, f"Run of {was.runbook} (resumed)", output)
    raise typer.Exit(report.exit_code)


@app.command()
@_guard
def coverage(sections: Annotated[str | None, typer.Option(
                 help="Comma-separated section prefixes, e.g. 1,2,3,6,10,11")] = None,
             fmt: Annotated[DocFmt, typer.Option("--format", "-f")] = DocFmt.text,
             runbooks: PathsOpt = None) -> None:
    """Which runbook step covers each actionable bullet of the guidelines."""
    import json

    from .coverage import coverage as measure
    from .coverage import coverage_json, render_coverage
    selected = [s.strip() for s in sections.split(",") if s.strip()] if sections else None
    report = measure(_catalog(runbooks, strict=False), sections=selected)
    if fmt == DocFmt.json:
        typer.echo(json.dumps(coverage_json(report), indent=2))
    else:
        render_coverage(report, _console())
    raise typer.Exit(EXIT_OK if report.ok else EXIT_FINDINGS)


@app.command("dark", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def dark(ctx: typer.Context) -> None:
    """Dark characterization of raw runs: constants into the DB, and a report (section 5)."""
    from detectors.dark.cli import app as dark_app  # extra-data and h5py: only when asked
    dark_app(ctx.args, prog_name="runbook dark")


def _mount_optional() -> None:
    """Sub-commands that live in other packages (the twin, the calibration DB)."""
    import importlib
    for module, name in (("sim.cli", "sim"), ("caldb.cli", "caldb")):
        try:
            sub = importlib.import_module(module).app
        except (ImportError, AttributeError):
            continue
        app.add_typer(sub, name=name)


_mount_optional()
register_ops(app)


def main() -> None:
    app()
