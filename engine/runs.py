"""One walk, start to stored record: what the CLI, `runbook health` and the dashboard share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from .inventory import Inventory, load_site, site_name
from .loader import Catalog, load_catalog
from .registry import Registry, default_registry
from .result import Report
from .store import Store
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
    """Walk `runbook_id` and, with a store, keep the report; returns it and its run id."""
    rb = session.catalog.get(runbook_id).runbook
    if instrument is not None:
        params = {**{n: instrument for n, p in rb.params.items() if p.type == "instrument"},
                  **params}
    started = time.time()
    walker = Walker(session.catalog, session.registry, session.inventory, mode=mode,
                    instrument=instrument, confirm=confirm, say=say, **kw)
    report = walker.walk(runbook_id, params)
    run_id = None
    if store is not None:
        run_id = store.add_run(report, started, time.time())
        if mode == "run":
            _audit(store, report, run_id)
    return report, run_id


def _audit(store: Store, report: Report, run_id: str) -> None:
    """Every change and confirmation of a run, as the audit table keeps it."""
    for rec in report.steps:
        if rec.kind not in ("action", "manual"):
            continue
        r = rec.resolved
        what = (f"{r.get('action')} {json.dumps(r.get('with', {}), sort_keys=True)}"
                if rec.kind == "action" else str(r.get("manual", "")))
        store.add_audit(site=report.site, instrument=report.instrument, run_id=run_id,
                        step=rec.id, what=what, outcome=rec.outcome,
                        confirmation=rec.outcome if rec.outcome in ("confirmed", "declined")
                        else "")
