"""The run journal: what a `run` did, step by step, so that `runbook resume` can go on.

Each step of a procedure run that observes or changes something (check, wait, action,
manual) gets a row in the store's ``journal_steps`` table before it starts and again when
it ends, each in its own committed transaction (WAL), so a SIGKILL loses at most the end
of the step under way. The row's key is the step's idempotency key: its branch, its id and
how many times this branch met it before (a retry loop meets a step again).

A resumed walk starts from the top and replays every step that ended, with its recorded
outcome, so it takes the same route without repeating anything; the first step without an
end is where it goes on. An action that began but has no end may or may not have
happened: the walker checks its postcondition before doing it again (`engine.walk`).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import RunbookError
from .redact import MASK, redact
from .result import StepRecord

if TYPE_CHECKING:
    from .store import Store

__all__ = ["SCHEMA", "Journal", "JournalRun", "open_run", "load_run", "list_runs",
           "set_state", "masked_params", "RESUMABLE"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS journal (
    run_id TEXT PRIMARY KEY, runbook TEXT NOT NULL, site TEXT, instrument TEXT,
    params TEXT NOT NULL, plan_hash TEXT NOT NULL, yes INTEGER NOT NULL DEFAULT 0,
    user TEXT, host TEXT, pid INTEGER, started REAL NOT NULL, updated REAL NOT NULL,
    state TEXT NOT NULL, note TEXT NOT NULL DEFAULT '', resumes INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS journal_started ON journal (started);
CREATE TABLE IF NOT EXISTS journal_steps (
    run_id TEXT NOT NULL, key TEXT NOT NULL, step TEXT NOT NULL, kind TEXT NOT NULL,
    started REAL NOT NULL, ended REAL, outcome TEXT, record TEXT,
    PRIMARY KEY (run_id, key));
"""

# running: under way (or its process died: `list_runs` tells them apart by the lock);
# interrupted: stopped by Ctrl-C after a step; finished: walked to an end;
# stopped: an action failed or a confirmation was declined (a new run, not a resume).
RESUMABLE = ("running", "interrupted")


@dataclass(frozen=True)
class JournalRun:
    run_id: str
    runbook: str
    site: str | None
    instrument: str | None
    params: dict[str, Any]
    plan_hash: str
    yes: bool
    user: str | None
    host: str | None
    pid: int | None
    started: float
    updated: float
    state: str
    note: str
    resumes: int
    steps_done: int = 0


def _connect(store: Store) -> sqlite3.Connection:
    db = sqlite3.connect(store.path, timeout=30, isolation_level=None,
                         check_same_thread=False)  # a Journal's: its walk's threads
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # an end that was written survives a crash
    return db


def _commit(db: sqlite3.Connection, store: Store,
            *statements: tuple[str, tuple[Any, ...]]) -> None:
    """The statements in one transaction, committed before this returns."""
    try:
        with db:
            db.execute("BEGIN IMMEDIATE")
            for sql, args in statements:
                db.execute(sql, args)
    except sqlite3.Error as exc:
        raise RunbookError(f"cannot write the run journal in {store.path}: {exc}") from exc


def _write(store: Store, *statements: tuple[str, tuple[Any, ...]]) -> None:
    """`_commit` on a connection of its own, for the one-off writes."""
    try:
        db = _connect(store)
    except sqlite3.Error as exc:
        raise RunbookError(f"cannot write the run journal in {store.path}: {exc}") from exc
    try:
        _commit(db, store, *statements)
    finally:
        db.close()


def open_run(store: Store, *, run_id: str, runbook: str, site: str | None,
             instrument: str | None, params: dict[str, Any], plan_hash: str, yes: bool,
             user: str, secrets: Iterable[str] = ()) -> None:
    """A new run's row, or a resumed run's row taken over by this process. Parameters
    are kept masked: a resume asks again for one that held a secret (`masked_params`)."""
    now = time.time()
    params = redact(params, secrets)
    _write(store, (
        "INSERT INTO journal (run_id, runbook, site, instrument, params, plan_hash, yes,"
        " user, host, pid, started, updated, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        " ON CONFLICT (run_id) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
        " updated = excluded.updated, state = 'running', note = '',"
        " resumes = resumes + 1",
        (run_id, runbook, site, instrument, json.dumps(params, sort_keys=True, default=str),
         plan_hash, int(yes), user, socket.gethostname(), os.getpid(), now, now,
         "running")))


def masked_params(params: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in params.items() if MASK in json.dumps(v, default=str))


def set_state(store: Store, run_id: str, state: str, note: str = "") -> None:
    _write(store, ("UPDATE journal SET state = ?, note = ?, updated = ? WHERE run_id = ?",
                   (state, note, time.time(), run_id)))


_RUNS = ("SELECT j.*, (SELECT COUNT(*) FROM journal_steps s WHERE s.run_id = j.run_id AND "
         "s.ended IS NOT NULL) AS done FROM journal j")


def _rows(store: Store, sql: str, args: tuple[Any, ...]) -> list[JournalRun]:
    try:
        db = _connect(store)
        try:
            rows = db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise RunbookError(f"cannot read the run journal in {store.path}: {exc}") from exc
    out = []
    for row in rows:
        data = dict(row)
        done = data.pop("done")
        data["params"], data["yes"] = json.loads(data["params"]), bool(data["yes"])
        out.append(JournalRun(**data, steps_done=done))
    return out


def load_run(store: Store, run_id: str) -> JournalRun:
    found = _rows(store, _RUNS + " WHERE j.run_id = ?", (run_id,))
    if not found:
        raise RunbookError(f"no run {run_id!r} in the journal ({store.path}); "
                           "`runbook runs` lists them")
    return found[0]


def list_runs(store: Store, limit: int = 20, instrument: str | None = None
              ) -> list[JournalRun]:
    sql, args = _RUNS, ()  # type: tuple[str, tuple[Any, ...]]
    if instrument:
        sql, args = sql + " WHERE j.instrument = ? COLLATE NOCASE", (instrument,)
    return _rows(store, sql + " ORDER BY j.started DESC LIMIT ?", (*args, limit))


@dataclass
class _Entry:
    started: float
    ended: float | None
    record: StepRecord | None


class Journal:
    """One run's journal as the walker uses it: `entry(key)` tells what an earlier attempt
    of this run did at that key; `begin` and `end` record this attempt."""

    def __init__(self, store: Store, run_id: str, *, secrets: Iterable[str] = (),
                 on_end: Callable[[StepRecord], None] | None = None) -> None:
        self.store, self.run_id = store, run_id
        self.secrets, self.on_end = list(secrets), on_end
        self._prior: dict[str, _Entry] = {}
        try:
            self._db = _connect(store)  # one for the whole walk: two writes a step
            for row in self._db.execute("SELECT * FROM journal_steps WHERE run_id = ?",
                                        (run_id,)):
                record = (StepRecord.model_validate_json(row["record"])
                          if row["record"] else None)
                self._prior[row["key"]] = _Entry(row["started"], row["ended"], record)
        except sqlite3.Error as exc:
            raise RunbookError(f"cannot read the run journal in {store.path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def key(branch: str, step_id: str, seen: int) -> str:
        return f"{branch}:{step_id}#{seen}"

    def entry(self, key: str) -> _Entry | None:
        return self._prior.get(key)

    def begin(self, key: str, step_id: str, kind: str) -> float:
        started = time.time()
        _commit(self._db, self.store, (
            "INSERT INTO journal_steps (run_id, key, step, kind, started) VALUES (?,?,?,?,?)"
            " ON CONFLICT (run_id, key) DO UPDATE SET started = excluded.started",
            (self.run_id, key, step_id, kind, started)))
        return started

    def end(self, key: str, record: StepRecord) -> None:
        """The step's end, masked like every report; then `on_end` (the audit)."""
        kept = json.dumps(redact(record.model_dump(mode="json"), self.secrets))
        now = time.time()
        _commit(self._db, self.store,
                ("UPDATE journal_steps SET ended = ?, outcome = ?, record = ? "
                 "WHERE run_id = ? AND key = ?", (now, record.outcome, kept, self.run_id, key)),
                ("UPDATE journal SET updated = ? WHERE run_id = ?", (now, self.run_id)))
        if self.on_end is not None:
            self.on_end(record)
