"""The engine's memory between commands: one SQLite file for runs, health, audit, locks
and the run journal.

One file (WAL, so that the dashboard reads while a scheduled health run writes) lives at
``$RUNBOOK_STATE_DIR/runbook.sqlite``, else ``$XDG_STATE_HOME/runbook/``, else
``~/.local/state/runbook/``. Reports are stored as the JSON that `engine.report` renders,
already redacted by the walk. Each audit entry is also appended, masked again with the
site's secrets, to ``audit.jsonl`` next to that file (see `Store.add_audit`); the locks of
running procedures are `engine.locks`'s, the journal of their steps `engine.journal`'s.
"""

from __future__ import annotations

import getpass
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .errors import RunbookError
from .journal import SCHEMA as JOURNAL_SCHEMA
from .locks import SCHEMA as LOCKS_SCHEMA
from .redact import redact
from .result import Report

__all__ = ["Store", "state_dir", "os_user", "new_run_id"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, runbook TEXT NOT NULL, mode TEXT NOT NULL, site TEXT,
    instrument TEXT, user TEXT, started REAL NOT NULL, finished REAL,
    exit_code INTEGER, findings INTEGER, unknowns INTEGER, report TEXT);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY AUTOINCREMENT, site TEXT NOT NULL, instrument TEXT NOT NULL,
    started REAL NOT NULL, finished REAL NOT NULL, worst TEXT NOT NULL,
    checks TEXT NOT NULL, new TEXT NOT NULL, resolved TEXT NOT NULL, mailed TEXT);
CREATE INDEX IF NOT EXISTS health_instrument ON health (site, instrument, id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, user TEXT, site TEXT,
    instrument TEXT, run_id TEXT, step TEXT, what TEXT, outcome TEXT, confirmation TEXT);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
""" + LOCKS_SCHEMA + JOURNAL_SCHEMA


def state_dir() -> Path:
    explicit = os.environ.get("RUNBOOK_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "runbook"


def new_run_id() -> str:
    """A run's id, given out before the walk so that its lock and audit can name it."""
    return uuid.uuid4().hex[:12]


def os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


class Store:
    """`Store.open()` for the default file, `Store.open(path)` for another."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def open(cls, path: Path | None = None) -> Store:
        path = path or state_dir() / "runbook.sqlite"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = cls(path)
            with store._db() as db:
                db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise RunbookError(f"cannot open the state file {path}: {exc} "
                               "(set RUNBOOK_STATE_DIR to a writable folder)") from exc
        return store

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30)
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            with db:
                yield db
        finally:
            db.close()

    # -- runs ----------------------------------------------------------------------------

    def add_run(self, report: Report, started: float, finished: float | None = None,
                user: str | None = None, run_id: str | None = None) -> str:
        """Keep a finished walk; `run_id` when one was given out before (see `new_run_id`)."""
        run_id = run_id or new_run_id()
        data = report.model_dump(mode="json")
        data["exit_code"] = report.exit_code
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, report.runbook, report.mode, report.site, report.instrument,
                 user or os_user(), started, finished or time.time(), report.exit_code,
                 len(report.findings), len(report.unknowns), json.dumps(data)))
        return run_id

    def runs(self, limit: int = 20, instrument: str | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT id, runbook, mode, site, instrument, user, started, finished, "
               "exit_code, findings, unknowns FROM runs")
        args: tuple[Any, ...] = ()
        if instrument:
            sql, args = sql + " WHERE instrument = ?", (instrument,)
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY started DESC LIMIT ?", (*args, limit))
            return [dict(r) for r in rows]

    def run(self, run_id: str) -> dict[str, Any] | None:
        """The stored run with its report (a dict in `engine.report`'s JSON form)."""
        with self._db() as db:
            row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["report"] = json.loads(out["report"]) if out["report"] else None
        return out

    # -- health --------------------------------------------------------------------------

    def add_health(self, site: str, instrument: str, started: float, finished: float,
                   worst: str, checks: list[dict[str, Any]], new: list[str],
                   resolved: list[str], mailed: list[str] | None) -> int:
        with self._db() as db:
            cur = db.execute(
                "INSERT INTO health (site, instrument, started, finished, worst, checks, new,"
                " resolved, mailed) VALUES (?,?,?,?,?,?,?,?,?)",
                (site, instrument, started, finished, worst, json.dumps(checks),
                 json.dumps(new), json.dumps(resolved),
                 None if mailed is None else json.dumps(mailed)))
            return int(cur.lastrowid or 0)

    def health(self, site: str | None = None, instrument: str | None = None,
               limit: int = 20) -> list[dict[str, Any]]:
        """Health runs, newest first."""
        where: list[str] = []
        args: list[Any] = []
        if site:
            where.append("site = ?")
            args.append(site)
        if instrument:
            where.append("instrument = ?")
            args.append(instrument)
        sql = "SELECT * FROM health" + (" WHERE " + " AND ".join(where) if where else "")
        return self._health_rows(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))

    def last_health(self, site: str, instrument: str) -> dict[str, Any] | None:
        rows = self.health(site, instrument, limit=1)
        return rows[0] if rows else None

    def latest_health(self) -> list[dict[str, Any]]:
        """The newest health run of each (site, instrument)."""
        return self._health_rows(
            "SELECT * FROM health WHERE id IN (SELECT MAX(id) FROM health"
            " GROUP BY site, instrument) ORDER BY instrument, site", ())

    def _health_rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute(sql, args).fetchall()
        out = []
        for row in rows:
            item = dict(row)
            for key in ("checks", "new", "resolved"):
                item[key] = json.loads(item[key])
            item["mailed"] = json.loads(item["mailed"]) if item["mailed"] else None
            out.append(item)
        return out

    # -- audit ---------------------------------------------------------------------------

    @property
    def audit_log(self) -> Path:
        """The append-only JSONL twin of the audit table, next to the state file."""
        return self.path.with_name("audit.jsonl")

    def add_audit(self, *, site: str | None, instrument: str | None, run_id: str | None,
                  step: str, what: str, outcome: str, confirmation: str = "",
                  user: str | None = None, at: float | None = None,
                  secrets: Iterable[str] = ()) -> int:
        """One audit entry, masked, into the table and, in the same transaction, as one line
        appended to `audit_log`: if the line cannot be written, the row is rolled back."""
        entry: dict[str, Any] = redact(
            {"at": at or time.time(), "user": user or os_user(), "site": site,
             "instrument": instrument, "run_id": run_id, "step": step, "what": what,
             "outcome": outcome, "confirmation": confirmation}, secrets)
        try:
            with self._db() as db:
                cur = db.execute(
                    "INSERT INTO audit (at, user, site, instrument, run_id, step, what,"
                    " outcome, confirmation) VALUES (?,?,?,?,?,?,?,?,?)",
                    tuple(entry.values()))
                entry = {"id": int(cur.lastrowid or 0), **entry}
                line = json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n"
                fd = os.open(self.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, line.encode("utf-8"))  # one write: one whole line
                finally:
                    os.close(fd)
        except OSError as exc:
            raise RunbookError(f"cannot append to the audit log {self.audit_log}: {exc}") \
                from exc
        return int(entry["id"])

    def audit(self, limit: int = 50, instrument: str | None = None,
              since: float | None = None) -> list[dict[str, Any]]:
        where: list[str] = []
        args: list[Any] = []
        if instrument:
            where.append("instrument = ? COLLATE NOCASE")
            args.append(instrument)
        if since is not None:
            where.append("at >= ?")
            args.append(since)
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        with self._db() as db:
            rows = db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
            return [dict(r) for r in rows]
