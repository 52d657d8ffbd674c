"""One walk, start to stored record: what the CLI, `runbook health` and the dashboard share."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from . import journal
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
         resume: str | None = None, **kw: Any) -> tuple[Report, str | None]:
    """Walk `runbook_id` and, with a store, keep the report; returns it and its run id.

    A `run` of a procedure needs the store: it holds the lock of (site, instrument,
    runbook) for the whole walk (`engine.locks`), its steps go to the journal
    (`engine.journal`) and its changes to the audit as they happen. `resume` continues
    the journaled run of that id instead of starting a new one.
    """
    rb = session.catalog.get(runbook_id).runbook
    if instrument is not None:
        params = {**{n: instrument for n, p in rb.params.items() if p.type == "instrument"},
                  **params}
    locking = mode == "run" and rb.kind == "procedure"
    if locking and store is None:
        raise RunbookError("a run needs the state file for its lock, journal and audit; set "
                           "RUNBOOK_STATE_DIR to a writable folder")
    if resume is not None and not locking:
        raise RunbookError(f"only a run of a procedure can be resumed; {runbook_id!r} is "
                           f"a {rb.kind}")
    run_id = resume or (new_run_id() if store is not None else None)
    started = time.time()
    walker = Walker(session.catalog, session.registry, session.inventory, mode=mode,
                    instrument=instrument, confirm=confirm, say=say, **kw)
    if not locking or store is None:
        report = walker.walk(runbook_id, params)
        if store is not None and run_id is not None:
            store.add_run(report, started, time.time(), run_id=run_id)
            if mode == "run":  # a tree's manual steps: their confirmations
                _audit(store, report.steps, report.site, instrument, run_id,
                       session.inventory.secrets(), bool(kw.get("yes")))
        return report, run_id
    assert run_id is not None
    secrets = session.inventory.secrets()
    site = session.inventory.name
    yes = bool(kw.get("yes"))
    with hold(store, site=site, instrument=instrument, family=rb.id, run_id=run_id,
              user=os_user(), warn=say):
        plan_hash = _plan_hash(session, runbook_id, params, instrument)
        if resume is not None:
            _may_resume(store, resume, plan_hash)
        journal.open_run(store, run_id=run_id, runbook=runbook_id, site=site,
                         instrument=instrument, params=params, plan_hash=plan_hash, yes=yes,
                         user=os_user(), secrets=secrets)

        def audit(rec: StepRecord) -> None:
            if rec.kind in ("action", "manual") and not rec.replayed:
                _audit(store, [rec], site, instrument, run_id, secrets, yes)

        walker.journal = journal.Journal(store, run_id, secrets=secrets, on_end=audit)
        with _stop_on_sigint(walker, say):
            try:
                report = walker.walk(runbook_id, params)
            except BaseException:
                journal.set_state(store, run_id, "interrupted", "stopped in a step")
                raise
            finally:
                walker.journal.close()
        state, note = _end_state(walker, report)
        journal.set_state(store, run_id, state, note)
        store.add_run(report, started, time.time(), run_id=run_id)
        if state == "interrupted" and say is not None:
            say(f"interrupted: {note}. Go on with: runbook resume {run_id}")
    return report, run_id


def _plan_hash(session: Session, runbook_id: str, params: dict[str, Any],
               instrument: str | None) -> str:
    from .plan import digest, fingerprints
    return digest(fingerprints(session.catalog, session.inventory, runbook_id, params,
                               instrument))


def _may_resume(store: Store, run_id: str, plan_hash: str) -> None:
    run = journal.load_run(store, run_id)
    if run.state not in journal.RESUMABLE:
        raise RunbookError(f"run {run_id} {run.state} ({run.note or 'nothing to resume'}); "
                           "only an interrupted run can be resumed: start a new run")
    if run.plan_hash != plan_hash:
        raise RunbookError(f"run {run_id}: the runbook, the inventory or the parameters "
                           "changed since it started; review the change and start a new run")


def _end_state(walker: Walker, report: Report) -> tuple[str, str]:
    if walker.stop_requested and report.aborted:
        return "interrupted", report.aborted
    if report.aborted:
        return "stopped", report.aborted
    return "finished", f"exit {report.exit_code}"


@contextlib.contextmanager
def _stop_on_sigint(walker: Walker, say: Callable[[str], None] | None) -> Iterator[None]:
    """The first Ctrl-C lets the step under way end and stops before the next one (the
    journal then has every step whole); a second one stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def first(_sig: int, _frame: Any) -> None:
        if walker.stop_requested:
            raise KeyboardInterrupt
        walker.stop_requested = True
        if say is not None:
            say("stopping after the step under way (Ctrl-C again to stop now)")

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


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


def _audit(store: Store, records: Iterable[StepRecord], site: str | None,
           instrument: str | None, run_id: str, secrets: Iterable[str], yes: bool) -> None:
    """Each change and confirmation of a run: the table row and the JSONL line."""
    for rec in records:
        if rec.kind not in ("action", "manual"):
            continue
        r = rec.resolved
        what = (f"{r.get('action')} {json.dumps(r.get('with', {}), sort_keys=True)}"
                if rec.kind == "action" else str(r.get("manual", "")))
        store.add_audit(site=site, instrument=instrument, run_id=run_id,
                        step=rec.id, what=what, outcome=rec.outcome,
                        confirmation=_confirmation(rec, yes), at=rec.at, secrets=secrets)
