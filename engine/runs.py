"""One walk, start to stored record: what the CLI, `runbook health` and the dashboard share."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

from .errors import RunbookError
from .inventory import Inventory, load_site, site_name
from .loader import Catalog, load_catalog
from .locks import hold
from .registry import Registry, default_registry
from .result import Report, StepRecord
from .store import Store, new_run_id, os_user
from .walk import Mode, Walker

__all__ = ["Session", "walk"]


class Session:
    """The catalog, registry and inventory of one site: `Session.load(site)`."""

    def __init__(self, catalog: Catalog, registry: Registry, inventory: Inventory) -> None:
        self.catalog, self.registry, self.inventory = catalog, registry, inventory

    @classmethod
    def load(cls, site: str | None = None, paths: list[Any] | None = None) -> Session:
        registry = default_registry()
        catalog = load_catalog(paths, registry)
        catalog.raise_problems()
        return cls(catalog, registry, load_site(site_name(site)))


def walk(session: Session, mode: Mode, runbook_id: str, params: dict[str, Any], *,
         instrument: str | None, store: Store | None = None,
         confirm: Callable[[str], bool] | None = None, say: Callable[[str], None] | None = None,
         **kw: Any) -> tuple[Report, str | None]:
    """Walk `runbook_id` and, with a store, keep the report; returns it and its run id.

    A `run` of a procedure needs the store: it holds the lock of (site, instrument,
    runbook) for the whole walk (`engine.locks`), and its changes go to the audit.
    """
    rb = session.catalog.get(runbook_id).runbook
    if instrument is not None:
        params = {**{n: instrument for n, p in rb.params.items() if p.type == "instrument"},
                  **params}
    locking = mode == "run" and rb.kind == "procedure"
    if locking and store is None:
        raise RunbookError("a run needs the state file for its lock and audit; set "
                           "RUNBOOK_STATE_DIR to a writable folder")
    run_id = new_run_id() if store is not None else None
    started = time.time()
    walker = Walker(session.catalog, session.registry, session.inventory, mode=mode,
                    instrument=instrument, confirm=confirm, say=say, **kw)
    lock = (hold(store, site=session.inventory.name, instrument=instrument, family=rb.id,
                 run_id=str(run_id), user=os_user(), warn=say)
            if locking and store is not None else contextlib.nullcontext())
    with lock:
        try:
            report = walker.walk(runbook_id, params)
        except KeyboardInterrupt:
            # What was changed before Ctrl-C is still audited (masked by the store).
            if store is not None and run_id is not None and mode == "run" and walker.report:
                _audit(store, walker.report, run_id, session.inventory.secrets(),
                       yes=bool(kw.get("yes")))
            raise
        if store is not None and run_id is not None:
            store.add_run(report, started, time.time(), run_id=run_id)
            if mode == "run":
                _audit(store, report, run_id, session.inventory.secrets(),
                       yes=bool(kw.get("yes")))
    return report, run_id


def _confirmation(rec: StepRecord, yes: bool) -> str:
    """The answer that let a step go on (or stopped it), as the audit keeps it."""
    if rec.kind == "manual":
        question = rec.resolved.get("confirm") or "Done?"
        return f"{'no' if rec.outcome == 'declined' else 'yes'}: {question}"
    if not rec.resolved.get("danger"):
        return ""  # not asked: only danger steps are confirmed
    if rec.outcome == "declined":
        return "no: danger step"
    return "yes: --yes given" if yes else "yes: danger step"


def _audit(store: Store, report: Report, run_id: str, secrets: Iterable[str],
           yes: bool) -> None:
    """Every change and confirmation of a run: the table row and the JSONL line."""
    for rec in report.steps:
        if rec.kind not in ("action", "manual"):
            continue
        r = rec.resolved
        what = (f"{r.get('action')} {json.dumps(r.get('with', {}), sort_keys=True)}"
                if rec.kind == "action" else str(r.get("manual", "")))
        store.add_audit(site=report.site, instrument=report.instrument, run_id=run_id,
                        step=rec.id, what=what, outcome=rec.outcome,
                        confirmation=_confirmation(rec, yes), at=rec.at, secrets=secrets)
