"""``runbook caldb ...``: find, inject, disable, enable and list calibration constants.

The store is ``--db URL`` (SQLAlchemy URL; default ``$RUNBOOK_CALDB`` or a SQLite file
under ``$XDG_DATA_HOME/runbook``) with files under ``--store-root`` (default
``$RUNBOOK_CALDB_STORE``). Conditions are ``--condition "Memory cells=352"``, repeated.
Times are ISO 8601; without an offset they are UTC. Heavy imports happen inside commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from engine.errors import RunbookError

if TYPE_CHECKING:
    from caldb.store import CalDB
    from caldb.versions import VersionInfo

__all__ = ["app"]

app = typer.Typer(
    help="The calibration-constant DB (sections 7, 11.3, 11.4, 12).", no_args_is_help=True
)

DbOpt = Annotated[str | None, typer.Option("--db", help="SQLAlchemy URL [env RUNBOOK_CALDB]")]
RootOpt = Annotated[
    Path | None, typer.Option("--store-root", help="constant files [env RUNBOOK_CALDB_STORE]")
]
CondOpt = Annotated[
    list[str] | None,
    typer.Option("--condition", "-C", help='operating condition "Parameter name=value"'),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


@contextmanager
def _store(db: str | None, root: Path | None) -> Iterator[CalDB]:
    """Open the store, and turn user-facing errors into a message and exit status 1."""
    from caldb.store import CalDB

    try:
        with CalDB.open(db, root) as store:
            yield store
    except RunbookError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def _pairs(items: list[str] | None, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, value = item.rpartition("=")
        if not sep or not name.strip():
            raise typer.BadParameter(f"{item!r}: expected 'name=value'", param_hint=what)
        out[name.strip()] = value.strip()
    return out


def _conditions(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, value in _pairs(items, "--condition").items():
        try:
            out[name] = float(value)
        except ValueError as exc:
            raise typer.BadParameter(
                f"{name}={value!r} is not a number", param_hint="--condition"
            ) from exc
    return out


def _deviations(items: list[str] | None) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for name, value in _pairs(items, "--deviation").items():
        lower, _, upper = value.partition(":")
        try:
            out[name] = (float(lower), float(upper or lower))
        except ValueError as exc:
            raise typer.BadParameter(
                f"{name}={value!r}: expected 'lower:upper'", param_hint="--deviation"
            ) from exc
    return out


def _time(text: str | None, what: str) -> Any:
    from caldb._time import now, parse_time

    return parse_time(text, what, now())


def _mark(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"


def _print_versions(versions: list[VersionInfo], as_json: bool, title: str) -> None:
    if as_json:
        typer.echo(json.dumps([v.to_json() for v in versions], indent=2))
        return
    table = Table(title=title)
    for column in (
        "Id",
        "Name",
        "File name",
        "Calibration constant",
        "Physical device",
        "Module",
        "Start date",
        "Start idx",
        "End idx",
        "Raw data location",
        "Deployed",
        "Good quality",
    ):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.id),
            v.name,
            v.file_name,
            v.constant_name,
            v.physical_name,
            v.karabo_da or "-",
            v.begin_at.strftime("%Y-%m-%d %H:%M:%S"),
            str(v.start_idx),
            str(v.end_idx),
            v.raw_data_location or "-",
            _mark(v.flg_deployed),
            _mark(v.flg_good_quality),
        )
    Console().print(table)


@app.command()
def find(
    calibration: Annotated[list[str], typer.Option("--calibration", "-c", help="e.g. Offset")],
    condition: CondOpt = None,
    detector: Annotated[str | None, typer.Option("--detector", "-d", help="karabo_id")] = None,
    module: Annotated[str | None, typer.Option("--module", "-m", help="karabo_da")] = None,
    pdu: Annotated[str | None, typer.Option("--pdu", help="physical detector unit")] = None,
    event_at: Annotated[str | None, typer.Option(help="ISO time [default: now]")] = None,
    strategy: Annotated[str, typer.Option(help="closest or prior")] = "closest",
    pdu_snapshot_at: Annotated[str | None, typer.Option(help="[default: event time]")] = None,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    store_root: RootOpt = None,
) -> None:
    """Find the versions a correction would load (11.3, 11.4); exit 1 if none match."""
    with _store(db, store_root) as store:
        at = _time(event_at, "--event-at")
        found = store.find(
            calibrations=calibration,
            conditions=_conditions(condition),
            event_at=at,
            detector=detector,
            karabo_da=module,
            pdu=pdu,
            strategy=strategy,
            pdu_snapshot_at=None
            if pdu_snapshot_at is None
            else _time(pdu_snapshot_at, "--pdu-snapshot-at"),
        )
    _print_versions(found, as_json, f"{strategy} to {at.isoformat()}")
    if not found:
        Console(stderr=True).print("no deployed, good-quality version matches", highlight=False)
        raise typer.Exit(1)


@app.command()
def inject(
    calibration: Annotated[str, typer.Option("--calibration", "-c")],
    data: Annotated[Path, typer.Option(help=".npy file with the constant", exists=True)],
    begin_at: Annotated[str, typer.Option(help="start date: when the dark run was taken")],
    condition: CondOpt = None,
    deviation: Annotated[
        list[str] | None, typer.Option(help='"Parameter name=lower:upper" [default: parameter]')
    ] = None,
    detector: Annotated[str | None, typer.Option("--detector", "-d")] = None,
    module: Annotated[str | None, typer.Option("--module", "-m")] = None,
    pdu: Annotated[str | None, typer.Option("--pdu")] = None,
    report: Annotated[str | None, typer.Option(help="path of the characterization report")] = None,
    raw_data_location: Annotated[str, typer.Option(help="proposal/run the data came from")] = "",
    db: DbOpt = None,
    store_root: RootOpt = None,
) -> None:
    """Write the constant file and register a new version ("Version already taken", 12.2)."""
    import numpy as np

    try:
        array = np.load(data, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(f"{data}: not a .npy array ({exc})", param_hint="--data") from exc
    with _store(db, store_root) as store:
        version = store.inject(
            calibration=calibration,
            conditions=_conditions(condition),
            deviations=_deviations(deviation) or None,
            data=array,
            begin_at=_time(begin_at, "--begin-at"),
            detector=detector,
            karabo_da=module,
            pdu=pdu,
            report=report,
            raw_data_location=raw_data_location,
        )
    _print_versions([version], False, "injected")


def _flags(
    ids: list[int], enable: bool, why: str, who: str | None, db: str | None, root: Path | None
) -> None:
    user = who or os.environ.get("USER") or ""
    with _store(db, root) as store:
        for ccv_id in ids:
            change = (store.enable if enable else store.disable)(ccv_id, user, why)
            typer.echo(
                f"{change.action}d version {ccv_id}: deployed {change.old_deployed} -> "
                f"{change.new_deployed}, good quality {change.old_good_quality} -> "
                f"{change.new_good_quality} (by {change.who}: {change.why})"
            )


WhyOpt = Annotated[str, typer.Option("--why", help="reason, kept in the audit log")]
WhoOpt = Annotated[str | None, typer.Option("--who", help="[default: $USER]")]


@app.command()
def disable(
    ids: list[int], why: WhyOpt, who: WhoOpt = None, db: DbOpt = None, store_root: RootOpt = None
) -> None:
    """Clear deployed and good quality on versions (section 7); audited."""
    _flags(ids, False, why, who, db, store_root)


@app.command()
def enable(
    ids: list[int], why: WhyOpt, who: WhoOpt = None, db: DbOpt = None, store_root: RootOpt = None
) -> None:
    """Set deployed and good quality again: undoes a disable; audited."""
    _flags(ids, True, why, who, db, store_root)


@app.command("list")
def list_(
    pdu: Annotated[
        str | None, typer.Option("--pdu", help="physical device contains (fuzzy)")
    ] = None,
    calibration: Annotated[str | None, typer.Option("--calibration", "-c")] = None,
    start_from: Annotated[str | None, typer.Option("--from", help="start date from")] = None,
    start_to: Annotated[str | None, typer.Option("--to", help="start date until")] = None,
    enabled_only: Annotated[bool, typer.Option("--enabled-only")] = False,
    limit: Annotated[int, typer.Option(min=1)] = 200,
    as_json: JsonOpt = False,
    db: DbOpt = None,
    store_root: RootOpt = None,
) -> None:
    """List versions newest first, filtered as in the backend's overview (Fig. 7.3)."""
    with _store(db, store_root) as store:
        from caldb._time import parse_time

        versions = store.versions(
            physical_device=pdu,
            calibration=calibration,
            start_from=None if start_from is None else parse_time(start_from, "--from"),
            start_to=None if start_to is None else parse_time(start_to, "--to"),
            only_enabled=enabled_only,
            limit=limit,
        )
    _print_versions(versions, as_json, "calibration constant versions")


@app.command()
def audit(
    ccv_id: Annotated[int | None, typer.Argument()] = None,
    db: DbOpt = None,
    store_root: RootOpt = None,
) -> None:
    """Show who disabled or enabled which version, when and why."""
    with _store(db, store_root) as store:
        changes = store.audit(ccv_id)
    table = Table(title="flag changes")
    for column in ("When", "Version", "Action", "Who", "Why", "Deployed", "Good quality"):
        table.add_column(column)
    for c in changes:
        table.add_row(
            c.at.strftime("%Y-%m-%d %H:%M:%S"),
            str(c.ccv_id),
            c.action,
            c.who,
            c.why,
            f"{c.old_deployed} -> {c.new_deployed}",
            f"{c.old_good_quality} -> {c.new_good_quality}",
        )
    Console().print(table)


@app.command()
def seed(
    path: Annotated[Path, typer.Argument(help="YAML or JSON seed", exists=True)],
    db: DbOpt = None,
    store_root: RootOpt = None,
) -> None:
    """Declare detector types, detectors, PDUs and their mapping, calibrations, parameters."""
    from ruamel.yaml import YAML, YAMLError

    try:
        spec = YAML(typ="safe").load(path.read_text())
    except YAMLError as exc:
        raise typer.BadParameter(f"{path}: {exc}", param_hint="PATH") from exc
    with _store(db, store_root) as store:
        store.seed(spec or {})
        counts = store.stats()
    typer.echo(", ".join(f"{n} {k}" for k, n in counts.items()))


if __name__ == "__main__":  # pragma: no cover
    app()
